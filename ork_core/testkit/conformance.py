"""The conformance kit: the checks every executor runs, ork's own included.

`ExecutorConformance` is a plain class whose ``test_*`` methods pytest collects from a
subclass; skips go through pytest when it runs them (``unittest.SkipTest`` otherwise), so
the kit needs nothing but ork-core. ``docs/testing.md`` describes each check.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tempfile
import threading
import time
import unittest
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ValidationError

from ork_core.context import Context, MemorySink, Metrics, TaskLogger
from ork_core.executors import ExecutorSpec, spec_of
from ork_core.plugins import Plugins
from ork_core.project import Project
from ork_core.registry import Registration
from ork_core.testkit.crash import crash_after_submit, resume
from ork_core.testkit.harness import (
    SUBJECT_PLUGIN,
    TASK_NAME,
    Subject,
    TaskResult,
    run_subject,
    write_project,
)
from ork_core.testkit.probe import check_registration, registration_entry
from ork_core.workflow import CORE_TASK_KEYS


def _skip(reason: str) -> None:
    """Skip the current check: through pytest when it runs the tests, else as unittest does."""
    try:
        import pytest
    except ImportError:
        raise unittest.SkipTest(reason) from None
    pytest.skip(reason)


class ExecutorConformance:
    """Checks that an executor behaves like ork's own; subclass it as a pytest class.

    Set `executor` to your registered type name (``"acme"``: also checks the installed
    plugin) or to the class, and override `config` and `task` (and `slow_task` for the
    timeout and cancel checks). Every hook is called inside the test, after your pytest
    fixtures ran, with `project_dir` set to the test's fresh project folder, so a fixture
    that starts a server can hand its address to `config`::

        class TestAcmeConformance(ExecutorConformance):
            executor = "acme"

            def config(self):
                return {"url": self.server_url}

            def task(self):
                return {"job": "hello"}

    A check that cannot apply is skipped with the reason; to opt out of one on purpose,
    set it to None in your subclass (``test_cancel = None``) and say why in a comment.
    """

    executor: ClassVar[str | type]
    """The executor under test: a registered type name or the class."""
    distribution: ClassVar[str | None] = None
    """The distribution that must register the executor (e.g. ``"ork-executor-acme"``)."""
    trackers: ClassVar[Mapping[str, type | str]] = {}
    """Job trackers to register with an executor class (installed plugins register their own)."""
    timeout_seconds: ClassVar[float] = 1.0
    """The ``timeout`` given to `slow_task` in the timeout check."""
    cancel_after: ClassVar[float] = 0.5
    """Seconds after `slow_task` started that the cancel check cancels the run."""
    stop_within: ClassVar[float] = 10.0
    """How long a timed-out or cancelled task may take to stop, including ``cancel()``."""
    poll_interval: ClassVar[float] = 0.05
    """Seconds between polls of deferred jobs during the checks."""
    run_deadline: ClassVar[float] = 120.0
    """A run that takes longer fails the check instead of hanging the test session."""

    project_dir: Path
    """The current check's project folder (ork.yaml, workflow, ``.ork/ork.db``)."""

    # -- hooks: override these -----------------------------------------------------------

    def config(self) -> Mapping[str, Any]:
        """The executor's config, as under ``executors.<name>.config`` in ork.yaml."""
        return {}

    def task(self) -> Mapping[str, Any]:
        """The keys of a task that succeeds quickly (your executor's keys, and ork's if needed)."""
        raise NotImplementedError(
            f"{type(self).__name__}: override task() to return the keys of a task that succeeds, "
            "e.g. {'command': 'echo hello'}"
        )

    def slow_task(self) -> Mapping[str, Any] | None:
        """A task that runs for a minute unless stopped; None skips the timeout and cancel checks."""
        return None

    def plugins(self) -> Iterable[object]:
        """Extra plugin objects to register for each in-process run."""
        return ()

    def check_output(self, output: Any) -> None:
        """Assert what `task` should output (after ork validated it against your output model)."""

    def check_stopped(self, result: TaskResult) -> None:
        """After a timeout or cancel: assert the external work really stopped (process, job …)."""

    def submissions(self) -> int | None:
        """How many jobs the external system received so far, if your fake can tell."""
        return None

    # -- helpers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _project(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="ork-conformance-") as tmp:
            self.project_dir = Path(tmp)
            yield self.project_dir

    def _subject(self) -> Subject:
        target = getattr(type(self), "executor", None)
        if target is None:
            raise AssertionError(f"{type(self).__name__}: set executor = 'your-type' (or the executor class)")
        return Subject.of(target, self.trackers)

    def _registration(self, plugins: Plugins) -> Registration | None:
        """The installed or built-in registration of the executor under test, if any."""
        subject = self._subject()
        registry = plugins.registry
        if subject.target is None:
            return registry.get("executor", subject.type_name)
        assert isinstance(subject.target, type)
        wanted = f"{subject.target.__module__}:{subject.target.__qualname__}"
        for reg in registry.all("executor"):
            if reg.target_path == wanted and reg.source.plugin != SUBJECT_PLUGIN:
                return reg
        return None

    def _spec(self) -> ExecutorSpec:
        subject = self._subject()
        if isinstance(subject.target, type):
            return spec_of(subject.target)
        plugins = subject.plugins(self.plugins())
        return spec_of(plugins.registry.get("executor", subject.type_name).load())

    def _run_check(self, task: Mapping[str, Any], *, timeout: float | None = None, cancel_after: float | None = None) -> TaskResult:
        subject = self._subject()
        write_project(
            self.project_dir, subject, config=self.config(), task=task, upstream=None, params=None, timeout=timeout
        )
        return run_subject(
            subject, self.project_dir, plugins=self.plugins(), cancel_after=cancel_after,
            poll_interval=self.poll_interval, deadline=self.run_deadline,
        )

    def _context(self, key: str) -> Context:
        sink = MemorySink()
        return Context(
            task_name=TASK_NAME, workflow_name="ork-testing", run_id="conformance", attempt=1,
            log=TaskLogger(sink, "conformance", TASK_NAME, 1), metrics=Metrics(sink, "conformance", TASK_NAME, 1),
            idempotency_key=key, workflow_dir=self.project_dir, project_dir=self.project_dir,
            task_config={k: v for k, v in self.task().items() if k not in CORE_TASK_KEYS},
        )

    def _wait_for_task_threads(self, before: set[threading.Thread]) -> list[str]:
        """Names of ork task threads started during the check that are still running after `stop_within`."""
        end = time.monotonic() + self.stop_within
        while True:
            alive = [
                t.name for t in threading.enumerate()
                if t.name.startswith("ork-task") and t not in before and t.is_alive()
            ]
            if not alive or time.monotonic() >= end:
                return alive
            time.sleep(0.05)

    def _check_stops(self, how: str, expected_status: str, limit: float) -> None:
        slow = self.slow_task()
        if slow is None:
            _skip(f"slow_task() returns None: give a task that runs for a minute to check {how}")
        assert slow is not None
        before = set(threading.enumerate())
        if how == "a timeout":
            result = self._run_check(slow, timeout=self.timeout_seconds)
        else:
            result = self._run_check(slow, cancel_after=self.cancel_after)
        assert result.status == expected_status, (
            f"after {how} the task should be {expected_status!r}, but it is {result.status!r} — "
            f"slow_task() must still be running {self.timeout_seconds:g}s after it started\n{result.describe()}"
        )
        if how == "a timeout":
            assert result.error and "timed out" in result.error, f"the error should say it timed out\n{result.describe()}"
        assert result.elapsed <= limit, (
            f"after {how} the run took {result.elapsed:.1f}s to end (allowed {limit:.1f}s): cancel() or run() "
            f"does not stop the work promptly\n{result.describe()}"
        )
        lingering = self._wait_for_task_threads(before)
        assert not lingering, (
            f"after {how}, run() was still running {self.stop_within:g}s later (thread {', '.join(lingering)}): "
            "a sync run() must return once ctx.cancel_event is set, or cancel(ctx) must make it return"
        )
        self.check_stopped(result)

    # -- the checks --------------------------------------------------------------------------

    def test_contract(self) -> None:
        """The class has the executor shape, a docstring, and optional methods ork can call."""
        subject = self._subject()
        with self._project():
            cls = subject.target if isinstance(subject.target, type) else None
            if cls is None:
                reg = subject.plugins(self.plugins()).registry.get("executor", subject.type_name)
                cls = reg.load()
            assert isinstance(cls.__dict__.get("__ork_executor__"), ExecutorSpec), (
                f"{cls.__qualname__} is not decorated with @executor: decorate it so its shape is checked when "
                "its module is imported, not when a workflow first uses it"
            )
            spec = spec_of(cls)
            assert inspect.cleandoc(cls.__doc__ or ""), (
                f"{cls.__qualname__} has no docstring: `ork executors show` prints it for your users"
            )
            shapes = {"close": (), "cancel": ("ctx",), "adopt": ("key", "ctx"), "check": ("task", "where")}
            for method in sorted(spec.optional):
                bound = method == "check"  # a staticmethod or classmethod: called on the class, no self
                try:
                    inspect.signature(getattr(cls, method)).bind(*(() if bound else (None,)), *shapes[method])
                except TypeError as exc:
                    args = ", ".join(shapes[method] if bound else ("self", *shapes[method]))
                    raise AssertionError(f"{cls.__qualname__}.{method} must accept ({args}): {exc}") from None
            instance = cls(spec.config_model.model_validate(dict(self.config())))
            close = getattr(instance, "close", None)
            if callable(close):
                result = close()
                if inspect.isawaitable(result):
                    asyncio.run(_awaited(result))

    def test_config_round_trips(self) -> None:
        """config() and task() survive validate → dump → YAML → validate unchanged; typos are errors."""
        spec = self._spec()
        with self._project():
            cases: list[tuple[str, type[BaseModel] | None, dict[str, Any]]] = [
                ("config", spec.config_model, dict(self.config())),
                ("task", spec.task_config_model, {k: v for k, v in self.task().items() if k not in CORE_TASK_KEYS}),
            ]
            for what, model, raw in cases:
                if model is None:
                    assert not raw, (
                        f"task() has executor keys {sorted(raw)} but the executor declares no task_config "
                        "model: use @executor(task_config=MyTask) so `ork validate` can check them"
                    )
                    continue
                first = model.model_validate(raw)
                dumped = first.model_dump(mode="json")
                again = model.model_validate(yaml.safe_load(yaml.safe_dump(dumped)))
                assert again == first and again.model_dump(mode="json") == dumped, (
                    f"{model.__name__} does not round-trip: {what}() validated to {dumped!r}, which validates "
                    f"back to {again.model_dump(mode='json')!r}; `ork` stores and re-reads these values"
                )
                model.model_json_schema()
                typo = "ork_conformance_unknown_key"
                try:
                    model.model_validate({**raw, typo: 1})
                except ValidationError:
                    pass
                else:
                    raise AssertionError(
                        f"{model.__name__} accepts an unknown key {typo!r}: a misspelled key in the {what} would be "
                        "silently ignored; set model_config = ConfigDict(extra='forbid')"
                    )
            write_project(self.project_dir, self._subject(), config=self.config(), task=self.task(),
                          upstream=None, params=None, timeout=None)
            project = Project.load(self.project_dir, self._subject().plugins(self.plugins()))
            resolved = project.resolve(self._subject().name)
            assert resolved.config == spec.config_model.model_validate(dict(self.config())), (
                "the config read from ork.yaml differs from config() validated directly"
            )

    def test_registration_is_lazy(self) -> None:
        """The registration module imports with ork-core's dependencies only, not the executor module."""
        reg = self._registration(self._subject().plugins(self.plugins()))
        entry = registration_entry(reg) if reg is not None else None
        if reg is None or entry is None:
            _skip("no installed plugin registers this executor (install your package to check its registration)")
        assert reg is not None and entry is not None
        check_registration(reg, *entry)

    def test_discovered(self) -> None:
        """ork finds the executor the way `ork executors` does, from the expected distribution."""
        subject = self._subject()
        plugins = subject.plugins(self.plugins())
        quarantined = [f"{q.label}: {q.error}" for q in plugins.registry.quarantined]
        reg = self._registration(plugins)
        if subject.target is not None and reg is None:
            if self.distribution:
                raise AssertionError(
                    f"no installed plugin registers {subject.target.__qualname__ if isinstance(subject.target, type) else subject.target}"
                    f" (expected from {self.distribution}); quarantined plugins: {quarantined or 'none'}"
                )
            _skip("the executor is given as a class and no installed plugin registers it")
        assert reg is not None
        if self.distribution:
            assert reg.source.distribution == self.distribution, (
                f"{subject.type_name!r} is registered by {reg.source.label}, expected {self.distribution}"
            )
            assert reg.source.version, f"{self.distribution} has no version in its metadata"
        regs = plugins.registry.entries["executor"].get(reg.name, [])
        assert len(regs) == 1, f"executor type {reg.name!r} is registered more than once: {[r.source.label for r in regs]}"

    def test_runs_one_task(self) -> None:
        """task() runs through the real scheduler, succeeds, and its output validates."""
        spec = self._spec()
        with self._project():
            result = self._run_check(self.task())
            assert result.status == "success", f"task() did not succeed\n{result.describe()}"
            if spec.output_model is not None:
                model = spec.output_model.model_validate(result.output)
                assert model.model_dump(mode="json") == result.output, (
                    f"the stored output {result.output!r} does not round-trip through {spec.output_model.__name__}"
                )
            self.check_output(result.output)

    def test_timeout(self) -> None:
        """slow_task() with a timeout fails with 'timed out' promptly, and its work stops."""
        with self._project():
            self._check_stops("a timeout", "failed", self.timeout_seconds + self.stop_within)

    def test_cancel(self) -> None:
        """Cancelling the run while slow_task() runs ends it as cancelled, promptly, and its work stops."""
        with self._project():
            self._check_stops("a cancel", "cancelled", self.cancel_after + self.stop_within)

    def test_adopt_unknown_key(self) -> None:
        """adopt() returns None for a key nothing was submitted with (so ork runs the task)."""
        spec = self._spec()
        if not spec.has("adopt"):
            _skip("the executor has no adopt()")
        with self._project():
            cls = spec.cls
            instance = cls(spec.config_model.model_validate(dict(self.config())))
            try:
                found = _call_maybe_async(getattr(instance, "adopt"), "ork-conformance-never-submitted-t1",
                                          self._context("ork-conformance-never-submitted-t1"))
            finally:
                close = getattr(instance, "close", None)
                if callable(close):
                    _call_maybe_async(close)
            assert found is None, (
                f"adopt() returned {found!r} for an idempotency key nothing was submitted with; it must return "
                "None so ork runs the task"
            )

    def test_resume_adopts(self) -> None:
        """After ork dies between submitting a job and committing it, `ork resume` adopts the job."""
        subject = self._subject()
        with self._project():
            write_project(self.project_dir, subject, config=self.config(), task=self.task(),
                          upstream=None, params=None, timeout=None)
            crash = crash_after_submit(subject, self.project_dir, poll_interval=self.poll_interval,
                                       deadline=self.run_deadline)
            if crash.run_id is None:
                assert crash.status == "success", f"task() did not succeed\n{crash.describe}"
                _skip("task() did not hand its job over with Deferred, so there is nothing to adopt")
            assert crash.run_id is not None
            submitted = self.submissions()
            resumed = resume(subject, self.project_dir, crash.run_id, plugins=self.plugins(),
                             poll_interval=self.poll_interval, deadline=self.run_deadline)
            result = resumed.result
            assert resumed.status_before == "running", (
                f"after the crash the task should be 'running', not {resumed.status_before!r}"
            )
            assert resumed.run_calls == 0, (
                "ork resume called run() again, which submits a second job: define adopt(self, key, ctx) that "
                f"returns Deferred for the job submitted with idempotency key {resumed.key_before!r} "
                f"(ctx.idempotency_key in run)\n{result.describe()}"
            )
            assert resumed.key_after == resumed.key_before, "the idempotency key changed across the crash"
            assert result.status == "success", f"the adopted job did not succeed\n{result.describe()}"
            after = self.submissions()
            if submitted is not None and after is not None:
                assert after == submitted, f"the external system received {after - submitted} more job(s) on resume"
            self.check_output(result.output)


async def _awaited(value: Any) -> Any:
    return await value


def _call_maybe_async(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result
