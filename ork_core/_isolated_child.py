"""The child side of ``isolation: process``: call one function, report over a pipe, exit.

Run as a script (``python .../_isolated_child.py``) by any interpreter, including one in a
virtual environment that has neither ork nor pydantic installed, so it uses the standard
library only (and pydantic when the environment has it, to validate arguments and the
return value the way the in-process path does). The request arrives as JSON on stdin;
messages leave as JSON lines on the file descriptor named by ``ORK_CHANNEL_FD``, so
whatever the function prints stays ordinary log output.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

CHANNEL_ENV = "ORK_CHANNEL_FD"


class Channel:
    """Messages to the parent, one JSON object per line; safe to use from several threads."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class TaskFailure(Exception):
    """A problem the parent reports as the task's error, without a traceback."""


class _Log:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def _emit(self, level: str, msg: object, args: tuple) -> None:  # type: ignore[type-arg]
        text = str(msg) % args if args else str(msg)
        self._channel.send({"kind": "log", "level": level, "message": text})

    def debug(self, msg: object, *args: object) -> None:
        self._emit("DEBUG", msg, args)

    def info(self, msg: object, *args: object) -> None:
        self._emit("INFO", msg, args)

    def warning(self, msg: object, *args: object) -> None:
        self._emit("WARNING", msg, args)

    def error(self, msg: object, *args: object) -> None:
        self._emit("ERROR", msg, args)

    def exception(self, msg: object, *args: object) -> None:
        self._emit("ERROR", f"{msg}\n{traceback.format_exc()}", args)

    def line(self, stream: str, text: str) -> None:
        self._channel.send({"kind": "line", "stream": stream, "message": str(text)})


class _Metrics:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def record(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"metric {name!r}: value must be a number, not {type(value).__name__}")
        clean = {str(k): str(v) for k, v in (labels or {}).items()}
        self._channel.send({"kind": "metric", "name": name, "value": float(value), "labels": clean})


class IsolatedContext:
    """What ``ctx`` offers inside the child: identity, parameters, log, metrics, folders."""

    def __init__(self, data: dict[str, Any], channel: Channel) -> None:
        self.task_name = data["task_name"]
        self.workflow_name = data["workflow_name"]
        self.run_id = data["run_id"]
        self.attempt = data["attempt"]
        self.try_number = data["try_number"]
        self.idempotency_key = data["idempotency_key"]
        self.params = data["params"]
        self.task_config = data["task_config"]
        self.env = data["env"]
        self.workflow_dir = Path(data["workflow_dir"])
        self.project_dir = Path(data["project_dir"])
        self.artifact_dir = Path(data["artifact_dir"]) if data.get("artifact_dir") else None
        self.timeout = data["timeout"]
        self.executor_name = data["executor_name"]
        self.trigger = data.get("trigger", "manual")
        self.logical_date = data.get("logical_date")
        self.interval_start = data.get("interval_start")
        self.interval_end = data.get("interval_end")
        self.log = _Log(channel)
        self.metrics = _Metrics(channel)
        self.cancel_event = threading.Event()
        self.loop = None

    @property
    def task_id(self) -> str:
        return f"{self.run_id}/{self.task_name}"

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def record_process_group(self, pgid: int | None) -> None:
        """Nothing to do: every process the function starts is already in the task's group."""

    def ensure_artifact_dir(self) -> Path:
        if self.artifact_dir is None:
            self.artifact_dir = self.project_dir / ".ork" / "artifacts" / self.run_id / self.task_name / str(self.attempt)
        missing = []  # owner-only (0700), as ork_core.secrets.private_dir makes them; not imported here, to start fast
        folder = self.artifact_dir
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
        return self.artifact_dir

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.workflow_dir / p)


def _import(request: dict[str, Any], ctx: IsolatedContext) -> Any:
    if request.get("file"):
        path = ctx.resolve(request["file"]).resolve()
        if not path.is_file():
            raise TaskFailure("python file {!r} not found (looked for {})".format(request["file"], path))
        name = "ork_task_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TaskFailure(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    module_name = request["module"]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise TaskFailure(
                f"module {module_name!r} not found (searched {ctx.workflow_dir}, {ctx.project_dir} and the packages of {sys.executable})"
            ) from None
        raise


def _adapter(annotation: Any) -> Any:
    """A pydantic TypeAdapter when pydantic is installed here, else None (values pass as JSON)."""
    if annotation is inspect.Parameter.empty:
        return None
    try:
        from pydantic import TypeAdapter
    except ImportError:
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - any failure means "no validation"
        return None


def _is_context(param: inspect.Parameter, annotation: Any) -> bool:
    if param.name == "ctx":
        return True
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name == "Context"


def _short(exc: Exception) -> str:
    try:
        errors = exc.errors(include_url=False)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not a pydantic error: keep its message
        return str(exc)
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append("{}{} (got {!r})".format(loc + ": " if loc else "", err["msg"], err.get("input")))
    return "; ".join(parts)


def _to_json(value: Any, returns: Any, label: str) -> Any:
    if returns is not None:
        try:
            value = returns.validate_python(value)
            return returns.dump_python(value, mode="json")
        except Exception as exc:
            if type(exc).__name__ == "ValidationError":
                raise TaskFailure(f"{label} returned a value that does not match its annotation: {_short(exc)}") from None
            raise
    try:
        from pydantic_core import to_jsonable_python
    except ImportError:
        to_jsonable_python = None  # type: ignore[assignment]
    if to_jsonable_python is not None:
        try:
            return to_jsonable_python(value)
        except Exception as exc:  # noqa: BLE001 - reported as the task error
            raise TaskFailure(f"{label} returned a value that is not JSON-serialisable: {exc}") from None
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TaskFailure(f"{label} returned a value that is not JSON-serialisable: {exc}") from None
    return value


def call(request: dict[str, Any], ctx: IsolatedContext) -> Any:
    """Import, bind and call the function; returns its JSON-ready result."""
    module = _import(request, ctx)
    function_name = request["function"]
    label = "{}:{}".format(request.get("module") or request.get("file"), function_name)
    func = getattr(module, function_name, None)
    if func is None or not callable(func):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(function_name, names, n=2)
        hint = "; did you mean {}?".format(", ".join(close)) if close else ""
        raise TaskFailure(f"{label}: no function {function_name!r}{hint}")
    try:
        import typing

        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable hints: use the raw annotations
        hints = {}
    params: dict[str, Any] = {}
    required: set[str] = set()
    wants_ctx: str | None = None
    wants_upstream = False
    for p in inspect.signature(func).parameters.values():
        annotation = hints.get(p.name, p.annotation)
        if _is_context(p, annotation):
            wants_ctx = p.name
            continue
        if p.name == "upstream":
            wants_upstream = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[p.name] = annotation
        if p.default is p.empty:
            required.add(p.name)
    inputs = request["inputs"]
    unknown = set(inputs) - set(params)
    if unknown:
        raise TaskFailure(
            "{} has no parameter(s) {}; it takes: {}".format(label, ", ".join(sorted(unknown)), ", ".join(params) or "none")
        )
    missing = required - set(inputs)
    if missing:
        raise TaskFailure("{} needs argument(s) {}: bind them under 'inputs'".format(label, ", ".join(sorted(missing))))
    kwargs: dict[str, Any] = {}
    for name, value in inputs.items():
        adapter = _adapter(params[name])
        if adapter is None:
            kwargs[name] = value
            continue
        try:
            kwargs[name] = adapter.validate_python(value)
        except Exception as exc:
            if type(exc).__name__ == "ValidationError":
                raise TaskFailure(f"{label}: argument {name!r} is invalid: {_short(exc)}") from None
            raise
    if wants_ctx:
        kwargs[wants_ctx] = ctx
    if wants_upstream:
        kwargs["upstream"] = request["upstream"]
    result = func(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    returns = _adapter(hints["return"]) if "return" in hints and hints["return"] is not type(None) else None
    return _to_json(result, returns, label)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the task's own code on: the frames of this runner help nobody."""
    tb = exc.__traceback__
    here = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _error_kind(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "TaskSkipped" in names:
        return "skipped"
    if "TaskError" in names or isinstance(exc, TaskFailure):
        return "task_error"
    return "exception"


def main() -> int:
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # ork_core's own modules must not shadow the task's imports
    fd = int(os.environ.pop(CHANNEL_ENV))
    os.set_inheritable(fd, False)  # processes the function starts must not hold the channel open
    channel = Channel(os.fdopen(fd, "w", encoding="utf-8"))
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    ctx = IsolatedContext(request["context"], channel)

    def on_term(signum: int, frame: object) -> None:
        ctx.cancel_event.set()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    for folder in reversed(request.get("sys_path", [])):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    started = time.perf_counter()
    try:
        value = call(request, ctx)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and ctx.cancelled:
            raise
        kind = _error_kind(exc)
        channel.send(
            {
                "kind": "error",
                "error": kind,
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": "" if kind != "exception" else _user_traceback(exc),
            }
        )
        sys.stdout.flush()
        sys.stderr.flush()
        return 1
    channel.send({"kind": "result", "value": value, "duration_s": time.perf_counter() - started})
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
