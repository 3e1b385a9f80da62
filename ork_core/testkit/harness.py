"""Running one task through ork's real scheduler, for `ork.testing.run_task` and the kit.

A run here is an ``ork run`` in miniature: the harness writes a real ork.yaml and a
one-task workflow into a folder, loads them the way the CLI does (so a bad key fails with
the user's message), and drives the real `Scheduler` over a SQLite database in that folder.
Only the plugin environment differs: the caller's ``ORK_*`` variables are ignored, so a
shell setting cannot change a test.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic_core
import yaml
from pydantic import BaseModel, ConfigDict

from ork_core.context import Context
from ork_core.executors import executor
from ork_core.hookspecs import hookimpl
from ork_core.plugins import Plugins, build_plugin_manager
from ork_core.project import Project
from ork_core.registry import Register
from ork_core.scheduler import RunResult, Scheduler, create_run, execute
from ork_core.storage import open_storage, storage_url
from ork_core.storage.base import RunOrigin, Storage
from ork_core.workflow import CompiledWorkflow, load_workflow

TASK_NAME = "task"
"""The name of the task under test in the workflow the harness writes."""
WORKFLOW_FILE = "workflow.yaml"
SUBJECT_PLUGIN = "ork.testing:subject"
"""The plugin name under which the harness registers the executor under test."""
_GIVEN_TYPE = "ork-testing-given"


class _InlinePlugin:
    """A plugin object registering the given executors and job trackers."""

    def __init__(self, name: str, executors: Mapping[str, type | str], trackers: Mapping[str, type | str]) -> None:
        self.__name__ = name
        self._executors = dict(executors)
        self._trackers = dict(trackers)

    @hookimpl
    def ork_register_executors(self, register: Register) -> None:
        for type_name, target in self._executors.items():
            register(type_name, target)

    @hookimpl
    def ork_register_job_trackers(self, register: Register) -> None:
        for name, target in self._trackers.items():
            register(name, target)

    def __repr__(self) -> str:
        return f"<inline plugin {self.__name__}: executors {sorted(self._executors)}, trackers {sorted(self._trackers)}>"


def inline_plugin(
    executors: Mapping[str, type | str] | None = None,
    trackers: Mapping[str, type | str] | None = None,
    *,
    name: str | None = None,
) -> object:
    """A plugin object that registers executor types and job trackers, for `plugin_manager`.

    Targets are classes or lazy ``"module:Class"`` strings, exactly as a registration module
    passes them to ``register``. Each object gets a unique plugin name unless `name` is given.
    """
    plugin = _InlinePlugin(name or "", executors or {}, trackers or {})
    if name is None:
        plugin.__name__ = f"ork.testing:inline-{id(plugin):x}"
    return plugin


def plugin_manager(*plugins: object, entry_points: bool = False, env: Mapping[str, str] | None = None) -> Plugins:
    """A fresh plugin manager: ork's built-ins, then (if asked) installed plugins, then `plugins`.

    `plugins` are modules or objects with ``@hookimpl`` functions (see `inline_plugin`).
    The environment switches (``ORK_PLUGINS``, ``ORK_STRICT_PLUGINS`` …) come from `env`,
    which is empty by default so the caller's shell cannot change a test. The result has
    ``.pm`` (the pluggy manager) and ``.registry`` (what was registered, and what failed).
    """
    return build_plugin_manager({} if env is None else env, plugins=plugins, entry_points=entry_points)


class _GivenTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: Any = None


class _GivenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@executor(task_config=_GivenTask)
class GivenOutput:
    """Stands in for an upstream task: returns the output the test gave for it."""

    def __init__(self, config: _GivenConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:
        return ctx.task_config.get("output")


@dataclass(frozen=True)
class TaskResult:
    """How one task of a `run_task` run ended, read back from the state database."""

    status: str
    """The task's final status: success, failed, cancelled, skipped or upstream_failed."""
    output: Any
    """The task's JSON output as stored (None unless it succeeded)."""
    error: str | None
    logs: list[str]
    """The task's log lines (``ctx.log`` and child-process output), oldest first."""
    run_id: str
    run_status: str
    attempts: int
    history: tuple[str, ...]
    """Every status the task went through in order, e.g. queued, running, deferred, success."""
    elapsed: float
    """Wall-clock seconds from the start of the run to its end."""
    external_id: str | None = None
    link: str | None = None
    metrics: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def deferred(self) -> bool:
        """True when the task handed its job over with ``Deferred`` at some point."""
        return "deferred" in self.history

    @property
    def log_text(self) -> str:
        return "\n".join(self.logs)

    def describe(self, last_lines: int = 40) -> str:
        """A few lines for an assertion message: status, error and the last log lines."""
        text = f"task {self.status} (run {self.run_status}, {self.attempts} attempt(s), {self.elapsed:.2f}s)"
        if self.error:
            text += f"\nerror: {self.error}"
        if self.logs:
            shown = self.logs[-last_lines:]
            text += "\nlog:\n" + textwrap.indent("\n".join(shown), "  ")
        return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return pydantic_core.to_jsonable_python(value)


def importable_target(obj: type) -> str:
    """``"module:Class"`` for a class a fresh interpreter can import, or an AssertionError."""
    module, qualname = obj.__module__, obj.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        raise AssertionError(
            f"{module}.{qualname} is not importable from another process (defined in __main__ or inside a "
            "function); define it at module level in an importable module, or install your package"
        )
    return f"{module}:{qualname}"


@dataclass
class Subject:
    """What is under test: the executor name in ork.yaml and how its type gets registered."""

    name: str
    type_name: str
    target: type | str | None
    """None when an installed plugin (or ork itself) registers `type_name`."""
    trackers: dict[str, type | str]

    @classmethod
    def of(cls, executor: str | type, trackers: Mapping[str, type | str] | None = None) -> Subject:
        if isinstance(executor, str):
            return cls(executor, executor, None, dict(trackers or {}))
        if not isinstance(executor, type):
            raise TypeError(f"executor must be a registered type name or a class, not {type(executor).__name__}")
        type_name = f"ork.testing:{executor.__module__}.{executor.__qualname__}"
        return cls(executor.__name__, type_name, executor, dict(trackers or {}))

    def plugins(self, extra: Iterable[object] = ()) -> Plugins:
        """A plugin manager with installed plugins, the subject's own registrations and `extra`."""
        executors: dict[str, type | str] = {_GIVEN_TYPE: f"{__name__}:GivenOutput"}
        if self.target is not None:
            executors[self.type_name] = self.target
        own = inline_plugin(executors, self.trackers, name=SUBJECT_PLUGIN)
        return build_plugin_manager({}, plugins=[own, *extra], entry_points=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type_name": self.type_name,
            "target": None if self.target is None else (
                self.target if isinstance(self.target, str) else importable_target(self.target)
            ),
            "trackers": {k: v if isinstance(v, str) else importable_target(v) for k, v in self.trackers.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Subject:
        return cls(data["name"], data["type_name"], data["target"], dict(data["trackers"]))


def write_project(
    folder: Path,
    subject: Subject,
    *,
    config: Mapping[str, Any] | BaseModel | None,
    task: Mapping[str, Any] | None,
    upstream: Mapping[str, Any] | None,
    params: Mapping[str, Any] | None,
    timeout: float | None,
) -> Path:
    """Write ork.yaml and a one-task workflow (plus given upstream tasks) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    project = {"executors": {subject.name: {"type": subject.type_name, "config": _jsonable(config or {})}}}
    (folder / "ork.yaml").write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
    tasks: dict[str, Any] = {}
    for name, output in (upstream or {}).items():
        tasks[name] = {"executor": _GIVEN_TYPE, "output": _jsonable(output)}
    body: dict[str, Any] = {"executor": subject.name}
    if upstream:
        body["depends_on"] = list(upstream)
    if timeout is not None:
        body["timeout"] = timeout
    body.update(_jsonable(dict(task or {})))
    tasks[TASK_NAME] = body
    workflow: dict[str, Any] = {"name": "ork-testing", "params": _jsonable(dict(params or {})), "tasks": tasks}
    path = folder / WORKFLOW_FILE
    path.write_text(yaml.safe_dump(workflow, sort_keys=False), encoding="utf-8")
    return path


class Recorder:
    """A scheduler reporter that remembers the task's statuses and can cancel once it runs."""

    def __init__(self, on_running: Callable[[], None] | None = None) -> None:
        self.history: list[str] = []
        self.on_running = on_running

    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None:
        pass

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        if task != TASK_NAME:
            return
        self.history.append(status)
        if status == "running" and self.on_running is not None:
            callback, self.on_running = self.on_running, None
            callback()

    def run_finished(self, run_id: str, status: str) -> None:
        pass


def open_project_storage(project: Project) -> Storage:
    # env={} so an ORK_DB in the caller's shell can never point a test at real state
    return open_storage(storage_url(None, project.dir, project.settings.storage, env={}), project.plugins.registry)


def drive(
    scheduler: Scheduler,
    recorder: Recorder,
    *,
    resumed: bool = False,
    cancel_after: float | None = None,
    deadline: float | None = None,
) -> tuple[RunResult, float]:
    """Run the scheduler to the end in a thread of its own; cancel it `cancel_after` s into the task."""
    timers: list[threading.Timer] = []
    if cancel_after is not None:

        def start_timer() -> None:
            timer = threading.Timer(cancel_after, scheduler.request_cancel)
            timer.daemon = True
            timers.append(timer)
            timer.start()

        recorder.on_running = start_timer
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = execute(scheduler, resumed=resumed, handle_signals=False)
        except BaseException as exc:  # handed to the calling thread below
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, name="ork-testing-run", daemon=True)
    thread.start()
    try:
        thread.join(deadline)
        if thread.is_alive():
            scheduler.request_cancel()
            thread.join(30)
            raise AssertionError(
                f"the run did not finish within {deadline:g}s"
                + (" (and had not stopped 30s after it was cancelled)" if thread.is_alive() else "")
            )
    finally:
        for timer in timers:
            timer.cancel()
    if "error" in box:
        raise box["error"]
    result: RunResult = box["result"]
    return result, time.monotonic() - started


def read_result(storage: Storage, run: RunResult, recorder: Recorder, elapsed: float) -> TaskResult:
    record = storage.get_run(run.run_id)
    task = record.tasks[TASK_NAME]
    lines = [line.line for line in storage.logs(run.run_id, TASK_NAME)]
    metrics = [(m.name, m.value, m.labels) for m in storage.metrics(run.run_id) if m.task == TASK_NAME]
    return TaskResult(
        status=task.status,
        output=task.output,
        error=task.error,
        logs=lines,
        run_id=run.run_id,
        run_status=record.status,
        attempts=task.attempt,
        history=tuple(recorder.history),
        elapsed=elapsed,
        external_id=task.external_id,
        link=task.link,
        metrics=metrics,
    )


@contextlib.contextmanager
def project_folder(project_dir: str | Path | None) -> Iterator[Path]:
    if project_dir is not None:
        yield Path(project_dir)
        return
    with tempfile.TemporaryDirectory(prefix="ork-testing-") as tmp:
        yield Path(tmp)


def run_subject(
    subject: Subject,
    folder: Path,
    *,
    plugins: Iterable[object] = (),
    cancel_after: float | None = None,
    poll_interval: float | None = None,
    deadline: float | None = None,
    origin: RunOrigin | None = None,
) -> TaskResult:
    loaded = subject.plugins(plugins)
    project = Project.load(folder, loaded)
    workflow = load_workflow(folder / WORKFLOW_FILE, project)
    storage = open_project_storage(project)
    try:
        run_id = create_run(storage, workflow, dict(workflow.params), origin=origin)
        recorder = Recorder()
        scheduler = Scheduler(
            project=project, plugins=loaded, storage=storage, workflow=workflow, run_id=run_id,
            params=dict(workflow.params), reporter=recorder, poll_interval=poll_interval, origin=origin,
        )
        run, elapsed = drive(scheduler, recorder, cancel_after=cancel_after, deadline=deadline)
        return read_result(storage, run, recorder, elapsed)
    finally:
        storage.close()


def run_task(
    executor: str | type,
    *,
    config: Mapping[str, Any] | BaseModel | None = None,
    task: Mapping[str, Any] | None = None,
    upstream: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    cancel_after: float | None = None,
    trackers: Mapping[str, type | str] | None = None,
    plugins: Iterable[object] = (),
    project_dir: str | Path | None = None,
    poll_interval: float | None = 0.1,
    origin: RunOrigin | None = None,
) -> TaskResult:
    """Run one task through ork's real scheduler and return how it ended.

    :param executor: a registered type name (``"python"``, or yours once the package is
        installed) or an executor class, which is registered for this run only.
    :param config: the executor's config, as written under ``executors.<name>.config`` in
        ork.yaml (a dict or the config model).
    :param task: the task's keys as written in the workflow: your executor's keys, and any
        of ork's (``retries``, ``env``, ``config_file`` …).
    :param upstream: outputs of upstream tasks by name; each becomes a task the one under
        test depends on, so ``{ref: tasks.<name>.output…}`` bindings work.
    :param params: run parameters, for ``{param: …}`` bindings.
    :param timeout: the task's ``timeout`` in seconds.
    :param cancel_after: cancel the run this many seconds after the task started
        (``Scheduler.request_cancel``: the run ends ``cancelled``, deferred jobs are cancelled).
    :param trackers: job trackers to register with an executor class (installed plugins
        register their own).
    :param plugins: more plugin objects or modules to register for this run.
    :param project_dir: where to write ork.yaml, the workflow and ``.ork/ork.db`` (kept);
        by default a temporary folder, removed afterwards.
    :param poll_interval: seconds between polls of deferred jobs (fast by default; None
        uses each tracker's own ``poll_interval``).
    :param origin: make it a run for a schedule's tick (``RunOrigin(trigger="schedule",
        logical_date=…, interval_start=…, interval_end=…)``), for ``ctx.logical_date`` and
        ``{{ ork.logical_date }}``; by default a manual run.
    """
    subject = Subject.of(executor, trackers)
    with project_folder(project_dir) as folder:
        write_project(folder, subject, config=config, task=task, upstream=upstream, params=params, timeout=timeout)
        return run_subject(
            subject, folder, plugins=plugins, cancel_after=cancel_after, poll_interval=poll_interval, origin=origin,
        )


def child_env() -> dict[str, str]:
    """The environment for a child interpreter that must import what this process imports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    paths = [p or os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
