"""The built-in ``python`` executor: call a function from a module or a file.

Arguments come from the task's ``inputs`` (``{const}``, ``{ref}``, ``{param}``) and are
validated against the function's annotations; the return value is validated against its
return annotation and becomes the task's JSON output. A function that asks for ``ctx``
(or a parameter annotated ``Context``) gets it; one that asks for ``upstream`` gets every
dependency's output by task name. Functions and validators are prepared once per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from ork_core.bindings import resolve
from ork_core.context import Context
from ork_core.errors import PathError, Problem, TaskError
from ork_core.executors import executor
from ork_core.taskconfig import load_task_config

if typing.TYPE_CHECKING:
    from ork_core.checks import TaskWhere


class PythonConfig(BaseModel):
    """Executor-wide settings for ``type: python``."""

    model_config = ConfigDict(extra="forbid")

    isolation: Literal["thread", "process"] = "thread"
    """``thread`` calls the function inside ork; ``process`` runs it in a child interpreter."""
    python: str | None = None
    """Interpreter for ``isolation: process`` (default: the one running ork)."""


class PythonTask(BaseModel):
    """The keys a python task writes in the workflow."""

    model_config = ConfigDict(extra="forbid")

    function: str
    module: str | None = None
    file: str | None = None
    inputs: dict[str, Any] = {}
    isolation: Literal["thread", "process"] | None = None
    python: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PythonTask:
        if (self.module is None) == (self.file is None):
            raise ValueError("give exactly one of 'module' (an importable module) or 'file' (a .py file)")
        return self


@dataclass(frozen=True)
class _Prepared:
    func: Callable[..., Any]
    label: str
    params: dict[str, TypeAdapter[Any] | None]
    wants_ctx: str | None
    wants_upstream: bool
    required: frozenset[str]
    returns: TypeAdapter[Any] | None
    is_async: bool


_prepared: dict[tuple[str, str, str], _Prepared] = {}
_locks_guard = threading.Lock()
_locks: dict[object, threading.Lock] = {}


def _lock_for(key: object) -> threading.Lock:
    """One lock per function, and one per file or module being imported; never one for all.

    Preparing imports the task's module, which may take seconds; under a single lock every
    other task's preparation waited for it, and timed out on time that was not theirs.
    """
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def source_file(task: PythonTask, ctx: Context) -> Path:
    """The task's ``file``, relative to the workflow's folder and confined to the project."""
    assert task.file is not None
    return ctx.resolve_path(task.file, field=f"tasks.{ctx.task_name}.file", must_exist="file")


def _import(task: PythonTask, ctx: Context, path: Path | None) -> Any:
    if path is not None:
        name = "ork_task_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise TaskError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        return module
    assert task.module is not None
    for folder in (str(ctx.workflow_dir), str(ctx.project_dir)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        return importlib.import_module(task.module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == task.module or task.module.startswith(exc.name + ".")):
            raise TaskError(f"module {task.module!r} not found (searched {ctx.workflow_dir}, {ctx.project_dir} and installed packages)") from None
        raise


def prepare(task: PythonTask, ctx: Context) -> _Prepared:
    # Resolved (and confined) on every call, not only when preparing: the cache must not let a
    # second workflow use a file outside its own project.
    path = source_file(task, ctx) if task.file is not None else None
    key = (str(path or ""), task.module or "", task.function)
    found = _prepared.get(key)
    if found is not None:
        return found
    with _lock_for(key):
        found = _prepared.get(key)
        if found is not None:
            return found
        with _lock_for(key[:2]):  # two functions of one file: it is executed once, and wholly
            module = _import(task, ctx, path)
        func = getattr(module, task.function, None)
        label = f"{task.module or task.file}:{task.function}"
        if func is None or not callable(func):
            names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
            import difflib

            close = difflib.get_close_matches(task.function, names, n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TaskError(f"{label}: no function {task.function!r}{hint}")
        try:
            hints = typing.get_type_hints(func)
        except Exception:
            hints = {}
        params: dict[str, TypeAdapter[Any] | None] = {}
        wants_ctx: str | None = None
        wants_upstream = False
        required: set[str] = set()
        for p in inspect.signature(func).parameters.values():
            ann = hints.get(p.name)
            if p.name == "ctx" or ann is Context:
                wants_ctx = p.name
                continue
            if p.name == "upstream":
                wants_upstream = True
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[p.name] = TypeAdapter(ann) if ann is not None else None
            if p.default is p.empty:
                required.add(p.name)
        ret = hints.get("return")
        returns = TypeAdapter(ret) if ret not in (None, type(None)) and "return" in hints else None
        found = _Prepared(func, label, params, wants_ctx, wants_upstream, frozenset(required), returns, inspect.iscoroutinefunction(func))
        _prepared[key] = found
        return found


def check_task(keys: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
    """Static checks of a python task (see `PythonExecutor.check`).

    Judged once per distinct (file or module, function, interpreter) in a validation: the
    10,000 tasks of one workflow that call the same module cost one look, not 10,000.
    """
    get = keys.get  # the cache lives for one workflow's validation: its folder is the same for every task
    key: tuple[Any, ...] | None = ("python.check", id(where.config), get("file"), get("module"), get("function"), get("isolation"), get("python"))
    try:
        found = where.cache.get(key)
    except TypeError:  # a value that is not a plain string: judged on its own
        key, found = None, None
    if found is None:
        task, problems = where.task_config(PythonTask, merge_config_file=False)  # config_file is the function's own
        if task is None:
            return problems
        found = _judge(task, where)
        if key is not None:
            where.cache[key] = found
    return [where.problem(field_, message) for field_, message in found]


def _judge(task: PythonTask, where: TaskWhere) -> list[tuple[str, str]]:
    """(field, message) for what is wrong with `task`'s function, found without importing anything.

    A task run by another interpreter (``python:``) may import what ork's cannot, and parse
    what ork's cannot: its module is not looked for, and its syntax is not judged.
    """
    from ork_core.python_static import MISSING, find_module_source, read_source

    config = where.config
    own = isinstance(config, PythonConfig) and ((task.isolation or config.isolation) == "thread" or not (task.python or config.python))
    if task.file is not None:
        key, label = "file", task.file
        try:
            source = where.resolve_path(task.file, field="file", must_exist="file")
        except PathError as exc:
            return [("file", exc.reason)]
    else:
        assert task.module is not None
        if not own:
            return []
        key, label = "module", task.module
        folders = [where.project_dir, where.workflow_dir]
        found = find_module_source(task.module, folders, where.cache)
        if found == MISSING:
            searched = ", ".join(str(f) for f in dict.fromkeys(folders))
            return [("module", f"module {task.module!r} not found (searched {searched} and installed packages)")]
        if not isinstance(found, Path):
            return []
        source = found
    parsed = read_source(source, where.cache)
    if parsed.syntax_error is not None and own:
        line, message = parsed.syntax_error
        return [(key, f"{label}{f':{line}' if line else ''}: syntax error: {message} (in {source})")]
    if parsed.names is None or task.function in parsed.names:
        return []
    import difflib

    public = [n for n in parsed.defined if not n.startswith("_")]
    close = difflib.get_close_matches(task.function, sorted(n for n in parsed.names if not n.startswith("_")), n=2)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    shown = ", ".join(public[:20]) + (f" and {len(public) - 20} more" if len(public) > 20 else "")
    return [("function", f"{label} has no function {task.function!r}{hint}; it defines: {shown or 'no public function'}")]


def call(prepared: _Prepared, inputs: dict[str, Any], ctx: Context, upstream: dict[str, Any]) -> Any:
    """Validate the arguments, call the function, and return its JSON-ready result."""
    unknown = set(inputs) - set(prepared.params)
    if unknown:
        raise TaskError(f"{prepared.label} has no parameter(s) {', '.join(sorted(unknown))}; it takes: {', '.join(prepared.params) or 'none'}")
    missing = prepared.required - set(inputs)
    if missing:
        raise TaskError(f"{prepared.label} needs argument(s) {', '.join(sorted(missing))}: bind them under 'inputs'")
    kwargs: dict[str, Any] = {}
    for name, value in inputs.items():
        adapter = prepared.params[name]
        if adapter is None:
            kwargs[name] = value
            continue
        try:
            kwargs[name] = adapter.validate_python(value)
        except ValidationError as exc:
            raise TaskError(f"{prepared.label}: argument {name!r} is invalid: {_short(exc)}") from None
    if prepared.wants_ctx:
        kwargs[prepared.wants_ctx] = ctx
    if prepared.wants_upstream:
        kwargs["upstream"] = upstream
    if prepared.is_async:
        if ctx.loop is None:
            result = asyncio.run(prepared.func(**kwargs))
        else:
            ok, result = asyncio.run_coroutine_threadsafe(_contained(prepared.func(**kwargs)), ctx.loop).result()
            if not ok:
                raise result
    else:
        result = prepared.func(**kwargs)
    if prepared.returns is not None:
        try:
            result = prepared.returns.validate_python(result)
            return prepared.returns.dump_python(result, mode="json")
        except ValidationError as exc:
            raise TaskError(f"{prepared.label} returned a value that does not match its annotation: {_short(exc)}") from None
    return result


async def _contained(coro: typing.Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Await a task's coroutine on ork's loop, handing whatever it raises back as a value.

    asyncio re-raises a `SystemExit` or `KeyboardInterrupt` of a Task out of the event loop,
    which would end ork; returned here, it is raised in the task's worker thread instead and
    fails the task like any other exception.
    """
    try:
        return True, await coro
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - re-raised in the worker thread
        return False, exc


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc + ': ' if loc else ''}{err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


@executor(task_config=PythonTask)
class PythonExecutor:
    """Runs a Python function named by ``module``/``file`` and ``function``.

    Each argument is bound under ``inputs`` to ``{const: …}``, ``{ref: tasks.<name>.output…}``
    or ``{param: <name>}``; the return value (validated against the return annotation) is the
    task's output.
    """

    def __init__(self, config: PythonConfig) -> None:
        self.config = config

    @staticmethod
    def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the file or module exists and defines the function; nothing is imported."""
        return check_task(task, where)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:
        task = load_task_config(PythonTask, "", ctx)  # config_file is the function's own, not task keys
        inputs = resolve(task.inputs, ctx.params, upstream, ctx.run_values())
        isolation = task.isolation or self.config.isolation
        if isolation == "process":
            from ork_core.python_isolated import run_isolated

            return run_isolated(task, inputs, ctx, upstream, python=task.python or self.config.python)
        return call(prepare(task, ctx), inputs, ctx, upstream)

    async def cancel(self, ctx: Context) -> None:
        """End an ``isolation: process`` task's child interpreter before the task is marked ended."""
        from ork_core.python_isolated import cancel_isolated

        await cancel_isolated(ctx)
