"""Workflow YAML → validated model → compiled DAG.

Validation collects every problem it can find (not just the first) and locates each one by
file and line. A compiled workflow is plain data with a content hash; the hash and the
compiled DAG are stored with each run so a run always knows exactly what it ran.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ork_core.checks import TaskWhere
from ork_core.context import RUN_VALUES
from ork_core.errors import OrkError, PathError, Problem, ProjectError, WorkflowError
from ork_core.paths import resolve_path
from ork_core.project import QUEUE_PATTERN, Project, ResolvedExecutor
from ork_core.schedules import Schedule, compile_schedules
from ork_core.yamlfile import YamlDoc, dotted, load_yaml, suggest, validation_problems

# Names are matched whole (fullmatch): with match() and "$", "abc\n" would pass.
TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
PARAM_NAME = TASK_NAME
DEFAULT_EXECUTOR = "python"

# Bounds on the numbers a workflow gives: each is finite, and none can make ork wait forever.
MAX_RETRIES = 1000
MAX_DELAY = 7 * 24 * 3600.0
"""Most seconds `retry_delay` and `max_retry_delay` may say (a week)."""
DEFAULT_MAX_RETRY_DELAY = 24 * 3600.0
"""The default cap on a computed retry delay (a day), as Airflow's ``max_retry_delay``."""
MAX_BACKOFF = 100.0
MAX_TIMEOUT = 30 * 24 * 3600.0
MAX_CONCURRENCY = 10_000

# strict: YAML's `true` is not 1 and "3" is not 3; a value is taken as the type it was written as.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TaskModel(BaseModel):
    """The keys every task may have, whatever its executor."""

    model_config = _STRICT

    executor: str = DEFAULT_EXECUTOR
    description: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    config_file: str | None = None
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    retry_delay: float = Field(default=0.0, ge=0, le=MAX_DELAY)
    retry_backoff: float = Field(default=1.0, gt=0, le=MAX_BACKOFF)
    max_retry_delay: float = Field(default=DEFAULT_MAX_RETRY_DELAY, ge=0, le=MAX_DELAY)
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT)
    on_failure: Literal["run", "skip"] = "skip"
    env: dict[str, str] = Field(default_factory=dict)
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    """Run this task's attempts on an `ork worker` serving this queue, not in the scheduler."""


class WorkflowModel(BaseModel):
    model_config = _STRICT

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-\.]*$")
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    tasks: dict[str, Any] = Field(min_length=1)
    schedule: Any = None
    """One mapping or a list of them; checked by `compile_schedules`, which reports each problem by line."""


CORE_TASK_KEYS = frozenset(TaskModel.model_fields)


@dataclass
class CompiledTask:
    name: str
    executor: str
    depends_on: tuple[str, ...]
    config_file: str
    retries: int
    retry_delay: float
    retry_backoff: float
    timeout: float | None
    on_failure_run: bool
    env: dict[str, str]
    task_config: dict[str, Any]
    dependents: list[str] = field(default_factory=list)
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY
    queue: str | None = None
    """The task's own ``queue:``; the executor's (ork.yaml) is looked up when the task runs."""

    def retry_delay_after(self, try_number: int) -> float:
        """Seconds to wait after attempt `try_number` fails: ``min(delay * backoff**(n-1), max)``.

        Multiplied step by step and stopped at the cap, so a large backoff or many retries
        never overflow a float (``1e308 ** 2`` raises) and never wait past `max_retry_delay`.
        """
        delay = self.retry_delay
        for _ in range(try_number - 1):
            if delay >= self.max_retry_delay:
                break
            delay *= self.retry_backoff
        return min(delay, self.max_retry_delay)

    def to_json(self) -> dict[str, Any]:
        data = {
            "executor": self.executor,
            "depends_on": list(self.depends_on),
            "config_file": self.config_file,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "retry_backoff": self.retry_backoff,
            "max_retry_delay": self.max_retry_delay,
            "timeout": self.timeout,
            "on_failure_run": self.on_failure_run,
            "env": self.env,
            "task_config": self.task_config,
        }
        if self.queue is not None:  # absent otherwise: snapshots of tasks without one stay as they were
            data["queue"] = self.queue
        return data

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> CompiledTask:
        return cls(
            name=name,
            executor=data["executor"],
            depends_on=tuple(data["depends_on"]),
            config_file=data["config_file"],
            retries=data["retries"],
            retry_delay=data["retry_delay"],
            retry_backoff=data["retry_backoff"],
            max_retry_delay=data.get("max_retry_delay", DEFAULT_MAX_RETRY_DELAY),
            timeout=data["timeout"],
            on_failure_run=data["on_failure_run"],
            env=data["env"],
            task_config=data["task_config"],
            queue=data.get("queue"),
        )


@dataclass
class CompiledWorkflow:
    """A validated workflow: tasks in topological order, grouped into levels, with a hash."""

    name: str
    file: str
    dir: Path
    tasks: dict[str, CompiledTask]
    order: list[str]
    levels: list[list[str]]
    params: dict[str, Any]
    max_concurrency: int | None
    hash: str
    source: str = ""
    schedules: list[Schedule] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "dir": str(self.dir),
            "order": self.order,
            "levels": self.levels,
            "params": self.params,
            "max_concurrency": self.max_concurrency,
            "tasks": {n: self.tasks[n].to_json() for n in self.order},
            "schedules": [s.to_json() for s in self.schedules],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], hash_: str, source: str = "") -> CompiledWorkflow:
        tasks = {n: CompiledTask.from_json(n, t) for n, t in data["tasks"].items()}
        _link_dependents(tasks)
        return cls(
            name=data["name"],
            file=data["file"],
            dir=Path(data["dir"]),
            tasks=tasks,
            order=data["order"],
            levels=data["levels"],
            params=data["params"],
            max_concurrency=data["max_concurrency"],
            hash=hash_,
            source=source,
            schedules=[Schedule.from_json(s) for s in data.get("schedules", ())],  # none in snapshots before schedules
        )


def _link_dependents(tasks: dict[str, CompiledTask]) -> None:
    for task in tasks.values():
        task.dependents = []
    for task in tasks.values():
        for dep in task.depends_on:
            tasks[dep].dependents.append(task.name)


def iter_bindings(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Yield ``(path, kind, target)`` for every ``{ref: …}`` / ``{param: …}`` / ``{run: …}`` in a task's keys."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((k, v),) = value.items()
            if k in ("ref", "param", "run") and isinstance(v, str):
                yield path, k, v
                return
        for k, v in value.items():
            yield from iter_bindings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_bindings(v, path + (i,))


def parse_ref(ref: str) -> tuple[str, list[str]] | None:
    """``tasks.<name>.output[.<field>…]`` → (name, fields), or None if malformed."""
    parts = ref.split(".")
    if len(parts) < 3 or parts[0] != "tasks" or parts[2] != "output" or not parts[1]:
        return None
    return parts[1], parts[3:]


def _find_cycle(tasks: dict[str, list[str]], remaining: set[str]) -> list[str]:
    """One cycle among `remaining` (all of which are on or behind a cycle), as a closed path."""
    start = sorted(remaining)[0]
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in tasks[node] if d in remaining)
    return path[seen[node]:] + [node]


def _topo(deps: dict[str, list[str]]) -> tuple[list[str], list[list[str]], set[str]]:
    indegree = {n: len(set(d for d in ds if d in deps)) for n, ds in deps.items()}
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in set(ds):
            if d in deps:
                dependents[d].append(n)
    level = [n for n in deps if indegree[n] == 0]
    order: list[str] = []
    levels: list[list[str]] = []
    while level:
        levels.append(level)
        order.extend(level)
        nxt: list[str] = []
        for n in level:
            for m in dependents[n]:
                indegree[m] -= 1
                if indegree[m] == 0:
                    nxt.append(m)
        level = nxt
    return order, levels, set(deps) - set(order)


def _declared_deps(raw: Any) -> list[str]:
    """A task's ``depends_on`` as written, keeping only names (bad entries are reported elsewhere)."""
    listed = raw.get("depends_on") if isinstance(raw, dict) else None
    return [d for d in listed if isinstance(d, str)] if isinstance(listed, list) else []


def load_workflow(path: Path, project: Project) -> CompiledWorkflow:
    """Load, validate and compile a workflow; raises WorkflowError listing every problem."""
    path = path.resolve() if path.exists() else path
    doc = load_yaml(path, what="a mapping with 'name' and 'tasks'")
    if doc.data is None or not isinstance(doc.data, dict):
        raise WorkflowError(doc.problems)
    problems: list[Problem] = list(doc.problems)
    try:
        model = WorkflowModel.model_validate(doc.data)
    except ValidationError as exc:
        problems += validation_problems(doc, exc, valid_keys={(): WorkflowModel.model_fields.keys()})
        raise WorkflowError(problems) from None
    for param in model.params:
        if not PARAM_NAME.fullmatch(param):
            problems.append(doc.problem(("params", param), f"parameter name {param!r} must start with a letter or '_' and hold only letters, digits, '_' and '-'"))
    tasks: dict[str, CompiledTask] = {}
    cache: dict[Any, Any] = {}  # for executors' check(): a file many tasks name is read once
    for name, raw in model.tasks.items():
        task = _compile_task(doc, path, project, model, name, raw, problems, cache)
        if task is not None:
            tasks[name] = task
    # Every task as written takes part, so a cycle through a task with other problems is reported too.
    deps = {n: _declared_deps(raw) for n, raw in model.tasks.items()}
    order, levels, stuck = _topo(deps)
    if stuck and not any("depends_on" in p.path for p in problems):
        cycle = _find_cycle(deps, stuck)
        problems.append(
            doc.problem(("tasks", cycle[0], "depends_on"), f"dependency cycle: {' -> '.join(cycle)}")
        )
    bound = {target for raw in model.tasks.values() for _, kind, target in iter_bindings(raw) if kind == "param"}
    schedules = compile_schedules(
        doc, model.schedule, declared=model.params, problems=problems,
        required={p for p in bound if model.params.get(p) is None},
    )
    if problems:
        raise WorkflowError(problems)
    _link_dependents(tasks)
    canonical = json.dumps(doc.data, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return CompiledWorkflow(
        name=model.name,
        file=str(path),
        dir=path.parent,
        tasks={n: tasks[n] for n in order},
        order=order,
        levels=levels,
        params=model.params,
        max_concurrency=model.max_concurrency,
        hash=digest,
        source=doc.text,
        schedules=schedules,
    )


def _compile_task(
    doc: YamlDoc,
    path: Path,
    project: Project,
    model: WorkflowModel,
    name: str,
    raw: Any,
    problems: list[Problem],
    cache: dict[Any, Any] | None = None,
) -> CompiledTask | None:
    base: tuple[str | int, ...] = ("tasks", name)
    if not TASK_NAME.fullmatch(name):
        problems.append(doc.problem(base, f"task name {name!r} must start with a letter or '_' and hold only letters, digits, '_' and '-'"))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(doc.problem(base, f"a task must be a mapping of keys (executor, depends_on …), not {type(raw).__name__}"))
        return None
    core = {k: v for k, v in raw.items() if k in CORE_TASK_KEYS}
    extra = {k: v for k, v in raw.items() if k not in CORE_TASK_KEYS}
    before = len(problems)
    try:
        tm = TaskModel.model_validate(core)
    except ValidationError as exc:
        problems += validation_problems(doc, exc, base)
        return None
    for var, value in tm.env.items():  # what no process environment can hold
        if not var or "=" in var or "\0" in var:
            problems.append(doc.problem(base + ("env", var), f"{var!r} is not an environment variable name (it must be non-empty, without '=' or NUL)"))
        elif "\0" in value:
            problems.append(doc.problem(base + ("env", var), "an environment variable cannot hold a NUL character"))
    if tm.retry_delay > tm.max_retry_delay:
        problems.append(
            doc.problem(base + ("retry_delay",), f"retry_delay {tm.retry_delay:g} is more than max_retry_delay {tm.max_retry_delay:g}; "
                        "lower it or raise max_retry_delay")
        )
    # dependencies
    seen: set[str] = set()
    for i, dep in enumerate(tm.depends_on):
        where = base + ("depends_on", i)
        if dep == name:
            problems.append(doc.problem(where, f"task {name!r} depends on itself"))
        elif dep in seen:
            problems.append(doc.problem(where, f"{dep!r} is listed twice in depends_on"))
        elif dep not in model.tasks:
            problems.append(
                doc.problem(where, f"depends on {dep!r}, which is not a task in this workflow{suggest(dep, model.tasks)}")
            )
        seen.add(dep)
    # executor
    task_config_model = None
    resolved_ok = False
    resolved: ResolvedExecutor | None = None
    try:
        resolved = project.resolve(tm.executor)
        task_config_model = resolved.spec.task_config_model
        resolved_ok = True
    except ProjectError as exc:
        problems.append(doc.problem(base + ("executor",), f"executor {tm.executor!r} is misconfigured: " + "; ".join(str(p) for p in exc.problems)))
    except OrkError as exc:
        problems.append(doc.problem(base + ("executor",), str(exc)))
    # executor-specific keys (only checkable once the executor is known)
    if resolved_ok:
        if task_config_model is None:
            for key in extra:
                problems.append(
                    doc.problem(
                        base + (key,),
                        f"unknown key {key!r}{suggest(key, CORE_TASK_KEYS)}; valid keys: {', '.join(sorted(CORE_TASK_KEYS))}",
                    )
                )
        else:
            try:
                task_config_model.model_validate(extra)
            except ValidationError as exc:
                # An executor may read keys from the task's config_file too (load_task_config
                # merges it). With such a file, only the keys written here can be judged: a
                # missing key or a rule across keys is checked when the task reads both.
                errors = [
                    e for e in exc.errors(include_url=False)
                    if not tm.config_file or (e["loc"] and e["loc"][0] in extra)
                ]
                valid = set(task_config_model.model_fields) | CORE_TASK_KEYS
                problems += validation_problems(doc, errors, base, valid_keys={base: valid})
    # bindings
    for where, kind, target in iter_bindings(extra, base):
        if kind == "ref":
            parsed = parse_ref(target)
            if parsed is None:
                problems.append(doc.problem(where, f"ref {target!r} must look like 'tasks.<task>.output[.<field>…]'"))
            elif parsed[0] not in tm.depends_on:
                problems.append(
                    doc.problem(where, f"ref to task {parsed[0]!r}, which {name!r} does not depend on; add it to depends_on")
                )
        elif kind == "run":
            if target not in RUN_VALUES:
                problems.append(
                    doc.problem(where, f"unknown run value {target!r}{suggest(target, RUN_VALUES)}; valid: {', '.join(RUN_VALUES)}")
                )
        elif model.params and target not in model.params:
            problems.append(
                doc.problem(where, f"unknown run parameter {target!r}{suggest(target, model.params)}; declared: {', '.join(model.params)}")
            )
    config_file = ""
    if tm.config_file:
        try:
            config_file = str(
                resolve_path(
                    tm.config_file, field=dotted(base + ("config_file",)), relative_to=path.parent,
                    project_dir=project.dir, allowed_roots=project.path_roots, must_exist="file",
                )
            )
        except PathError as exc:
            problems.append(doc.problem(base + ("config_file",), f"config file {exc.reason}"))
    if resolved is not None and len(problems) == before and resolved.spec.has("check"):
        checked = TaskWhere(
            task_name=name, doc=doc, workflow_dir=path.parent, project_dir=project.dir, config=resolved.config,
            task_keys=extra, config_file=config_file, env=tm.env, allowed_path_roots=project.path_roots,
            cache={} if cache is None else cache,
        )
        problems += _executor_check(resolved, checked)
    if len(problems) > before:
        return None
    return CompiledTask(
        name=name,
        executor=tm.executor,
        depends_on=tuple(tm.depends_on),
        config_file=config_file,
        retries=tm.retries,
        retry_delay=tm.retry_delay,
        retry_backoff=tm.retry_backoff,
        max_retry_delay=tm.max_retry_delay,
        timeout=tm.timeout,
        on_failure_run=tm.on_failure == "run",
        env=dict(tm.env),
        task_config=extra,
        queue=tm.queue,
    )


def _executor_check(resolved: ResolvedExecutor, where: TaskWhere) -> list[Problem]:
    """The executor's own static ``check`` of a task; a check that raises is reported, not fatal."""
    try:
        found = resolved.spec.cls.check(where.task_keys, where)  # type: ignore[attr-defined]
    except Exception as exc:
        return [where.problem((), f"executor {resolved.name!r}: check() failed: {type(exc).__name__}: {exc}")]
    return [p if isinstance(p, Problem) else where.problem((), str(p)) for p in found or ()]


def required_params(workflow: CompiledWorkflow) -> set[str]:
    """Run parameters the tasks bind to that have no default in the workflow's ``params``."""
    used = {target for t in workflow.tasks.values() for _, kind, target in iter_bindings(t.task_config) if kind == "param"}
    return {p for p in used if p not in workflow.params or workflow.params[p] is None}
