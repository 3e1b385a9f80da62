"""``isolation: process`` for the python executor: the function runs in a child interpreter.

Why: a function that leaks memory, changes global state, crashes the interpreter or starts
processes of its own cannot harm ork or the tasks next to it; with ``python:`` it can even
run in another virtual environment (other library versions). The child is a process tree
like any other (`ork_core.proctree`): recorded while it runs, ended as a whole on timeout or
cancel. Inputs, ``upstream`` and the context's plain fields cross to the child as JSON on
stdin; the result, log records and metrics come back as JSON lines on a separate pipe, so
what the function prints is just log output.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic_core

from ork_core.context import Context
from ork_core.errors import TaskError, TaskSkipped
from ork_core.proctree import DEFAULT_GRACE, TreeProcess, task_markers, tree_alive

if TYPE_CHECKING:
    from ork_core.python_executor import PythonTask

CHILD_SCRIPT = Path(__file__).with_name("_isolated_child.py")
CHANNEL_ENV = "ORK_CHANNEL_FD"
_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}

_lock = threading.Lock()
_running: dict[int, TreeProcess] = {}
"""The child of each running isolated task, by ``id(ctx)``, so `cancel_isolated` can end it."""


def find_interpreter(python: str | None, ctx: Context) -> str:
    """The interpreter to run: ork's own, a path (file or virtual environment folder), or a name on PATH."""
    if not python:
        return sys.executable
    local = Path(os.path.abspath(ctx.resolve(Path(python).expanduser())))
    if "/" not in python and os.sep not in python and not local.exists():
        found = shutil.which(python)
        if found is None:
            raise TaskError(
                f"python: {python!r} is neither a file or folder beside the workflow nor a program on PATH; "
                "give the path of an interpreter or a virtual environment"
            )
        return found
    path = local  # abspath, not resolve: a venv's python is a symlink that must stay in the venv
    if path.is_dir():
        for name in ("bin/python", "bin/python3", "Scripts/python.exe"):
            if (path / name).is_file():
                return str(path / name)
        raise TaskError(f"python: {python!r} is a folder without bin/python; is it a virtual environment?")
    if not path.is_file():
        raise TaskError(f"python: {python!r} not found (looked for {path})")
    if not os.access(path, os.X_OK):
        raise TaskError(f"python: {path} is not executable")
    return str(path)


def _request(task: PythonTask, inputs: Mapping[str, Any], ctx: Context, upstream: Mapping[str, Any]) -> bytes:
    from ork_core.python_executor import source_file

    data = {
        "module": task.module,
        "file": str(source_file(task, ctx)) if task.file is not None else None,  # confined here, not in the child
        "function": task.function,
        "inputs": dict(inputs),
        "upstream": dict(upstream),
        "sys_path": [str(ctx.workflow_dir), str(ctx.project_dir)],
        "context": {
            "task_name": ctx.task_name,
            "workflow_name": ctx.workflow_name,
            "run_id": ctx.run_id,
            "attempt": ctx.attempt,
            "try_number": ctx.try_number,
            "idempotency_key": ctx.idempotency_key,
            "params": ctx.params,
            "task_config": ctx.task_config,
            "env": ctx.env,
            "workflow_dir": str(ctx.workflow_dir),
            "project_dir": str(ctx.project_dir),
            "artifact_dir": str(ctx.artifact_dir) if ctx.artifact_dir else None,
            "timeout": ctx.timeout,
            "executor_name": ctx.executor_name,
            "trigger": ctx.trigger,
            "logical_date": ctx.logical_date,
            "interval_start": ctx.interval_start,
            "interval_end": ctx.interval_end,
        },
    }
    try:
        return pydantic_core.to_json(data)
    except pydantic_core.PydanticSerializationError as exc:
        raise TaskError(f"the inputs of an isolated task must be JSON-serialisable: {exc}") from None


class _Replies:
    """Collects what the child sends: log records and metrics go straight to the context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.result: Any = None
        self.has_result = False
        self.error: dict[str, Any] | None = None
        self.stderr_tail: list[str] = []

    def lines(self, stream: str, lines: list[bytes]) -> None:
        if stream != "channel":
            for raw in lines:
                text = raw.decode("utf-8", "backslashreplace")
                self.ctx.log.line(stream, text)
                if stream == "stderr" and text.strip():
                    self.stderr_tail = (self.stderr_tail + [text[:500]])[-5:]
            return
        for raw in lines:
            try:
                message = json.loads(raw)
            except ValueError:
                self.ctx.log.warning("unreadable message from the child interpreter: %r", raw[:200])
                continue
            self._message(message)

    def _message(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "log":
            level = message.get("level", "INFO")
            log = getattr(self.ctx.log, (level if level in _LEVELS else "INFO").lower())
            log("%s", message.get("message", ""))
        elif kind == "line":
            self.ctx.log.line(str(message.get("stream", "stdout")), str(message.get("message", "")))
        elif kind == "metric":
            self.ctx.metrics.record(str(message["name"]), float(message["value"]), message.get("labels") or {})
        elif kind == "result":
            self.result, self.has_result = message.get("value"), True
        elif kind == "error":
            self.error = message


def _environment(ctx: Context) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in ctx.env.items()})
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def run_isolated_async(
    task: PythonTask,
    inputs: Mapping[str, Any],
    ctx: Context,
    upstream: Mapping[str, Any],
    *,
    python: str | None = None,
    grace: float = DEFAULT_GRACE,
) -> Any:
    """Run the function in a child interpreter on the current loop; see `run_isolated`."""
    if ctx.cancelled:
        # the task was cancelled (or ork is stopping) while its thread was on the way here: a
        # child started now could outlive ork's check that the run's processes are gone
        raise TaskError("cancelled before the child interpreter started")
    interpreter = find_interpreter(python, ctx)
    replies = _Replies(ctx)
    tree = TreeProcess(
        [interpreter, str(CHILD_SCRIPT)],
        cwd=ctx.workflow_dir if ctx.workflow_dir.is_dir() else None,
        env=_environment(ctx),
        on_lines=replies.lines,
        on_start=ctx.record_process_group,
        grace=grace,
        stdin=_request(task, inputs, ctx, upstream),
        channel_env=CHANNEL_ENV,
        markers=task_markers(ctx.run_id, ctx.task_name, ctx.attempt),
    )
    with _lock:
        _running[id(ctx)] = tree
    try:
        completed = await tree.run()
    except FileNotFoundError:
        if tree.pid is None:
            raise TaskError(f"python interpreter {interpreter!r} could not be started") from None
        raise
    finally:
        with _lock:
            _running.pop(id(ctx), None)
        if tree.pid is not None and not tree_alive(tree.pid):
            ctx.record_process_group(None)
    label = f"{task.module or task.file}:{task.function}"
    if replies.error is not None:
        err = replies.error
        if err.get("error") == "skipped":
            raise TaskSkipped(err.get("message") or "")
        if err.get("error") == "task_error":
            raise TaskError(str(err.get("message")))
        if err.get("traceback"):
            ctx.log.error("%s", str(err["traceback"]).rstrip())
        message = f": {err.get('message')}" if err.get("message") else ""
        raise TaskError(f"{label} raised {err.get('type')}{message}")
    if completed.leftovers:
        ctx.log.warning("the function returned but left %d process(es) running; ork ended them", completed.leftovers)
    if replies.has_result and completed.returncode == 0:
        return replies.result
    how = (
        f"was killed by signal {completed.signal_name}"
        if completed.returncode < 0
        else f"exited with code {completed.returncode}"
    )
    tail = f"; last stderr: {' | '.join(replies.stderr_tail)}" if replies.stderr_tail else ""
    raise TaskError(f"{label}: the child interpreter ({interpreter}) {how} before returning a result{tail}")


def run_isolated(
    task: PythonTask,
    inputs: Mapping[str, Any],
    ctx: Context,
    upstream: Mapping[str, Any],
    python: str | None = None,
) -> Any:
    """Run the task's function in a child interpreter and return its JSON result.

    Called from the python executor's worker thread. The child runs on the scheduler's
    loop when there is one (its pipes are read there like any process task's); without a
    loop (a direct call) on a private one. If ``ctx.cancel_event`` is set, the child's tree
    is ended.
    """
    loop = ctx.loop
    if loop is None or not loop.is_running():
        return asyncio.run(run_isolated_async(task, inputs, ctx, upstream, python=python))
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        raise RuntimeError("run_isolated blocks until the child ends; on the loop's thread await run_isolated_async")
    future = asyncio.run_coroutine_threadsafe(run_isolated_async(task, inputs, ctx, upstream, python=python), loop)
    while True:
        try:
            return future.result(timeout=0.2)
        except concurrent.futures.TimeoutError:
            if ctx.cancel_event.is_set():
                loop.call_soon_threadsafe(future.cancel)
        except concurrent.futures.CancelledError:
            raise TaskError("cancelled") from None


async def cancel_isolated(ctx: Context) -> None:
    """End the child of an isolated task (from the executor's ``cancel``); a no-op if there is none."""
    with _lock:
        tree = _running.get(id(ctx))
    if tree is None or tree.loop is None:
        return
    if tree.loop is asyncio.get_running_loop():
        await tree.end()
    else:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(tree.end(), tree.loop))


__all__ = ["cancel_isolated", "find_interpreter", "run_isolated", "run_isolated_async"]
