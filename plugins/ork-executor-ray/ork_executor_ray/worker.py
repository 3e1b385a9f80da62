"""The actor side of ``ray_actor``: call one task's function, hand back what it said.

The function is called by the same code as the python executor's ``isolation: process``
child (`ork_core._isolated_child`), which needs only the standard library. This module and
that one travel to the cluster by value (see `RayActorExecutor`), so a cluster's workers need
neither ork nor this plugin installed. What the function logs, records or prints is
collected as the child's channel messages and replayed into the task's log by ork.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from typing import Any

from ork_core import _isolated_child as child


class _Lines(io.TextIOBase):
    """A stdout/stderr that turns whole lines into ``line`` messages of the channel."""

    def __init__(self, channel: child.Channel, stream: str) -> None:
        self._channel = channel
        self._stream = stream
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._channel.send({"kind": "line", "stream": self._stream, "message": line})
        return len(text)

    def close_partial(self) -> None:
        if self._partial:
            self._channel.send({"kind": "line", "stream": self._stream, "message": self._partial})
            self._partial = ""


class _Warm:
    """What a warm actor keeps between tasks: imported task files and argument validators.

    The isolated child makes one call per process, so it imports the task's file and builds
    a validator per annotation every time; an actor makes thousands, and those two were most
    of its time per task. A file is imported again when it changed (size or mtime), as a
    fresh interpreter would see it; a validator is kept per annotation object.
    """

    def __init__(self) -> None:
        self.files: dict[tuple[str, int, int], Any] = {}
        self.adapters: dict[int, tuple[Any, Any]] = {}
        self._import = child.call.__globals__["_import"]
        self._adapter = child.call.__globals__["_adapter"]

    def install(self) -> None:
        # the globals `call` reads: its module's dict, or, when Ray sent the module by value,
        # the dict cloudpickle rebuilt for its functions (setting the module attribute misses it)
        names = child.call.__globals__
        names["_import"] = self.import_
        names["_adapter"] = self.adapter

    def import_(self, request: dict[str, Any], ctx: child.IsolatedContext) -> Any:
        if not request.get("file"):
            return self._import(request, ctx)  # importlib caches modules itself
        try:
            st = os.stat(ctx.resolve(request["file"]))
        except OSError:
            return self._import(request, ctx)  # let it report the missing file
        key = (str(request["file"]), st.st_mtime_ns, st.st_size)
        module = self.files.get(key)
        if module is None:
            module = self.files[key] = self._import(request, ctx)
        return module

    def adapter(self, annotation: Any) -> Any:
        found = self.adapters.get(id(annotation))
        if found is not None and found[0] is annotation:
            return found[1]
        made = self._adapter(annotation)
        self.adapters[id(annotation)] = (annotation, made)  # holds the annotation: its id stays its own
        return made


class TaskWorker:
    """One warm interpreter of the pool; `call` runs one task at a time (max_concurrency 1)."""

    def __init__(self) -> None:
        _Warm().install()

    def pid(self) -> int:
        return os.getpid()

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run the request's function; return ``{"messages": <JSON lines>, "pid": …}``.

        The messages are those of the isolated child: log, line and metric records, then one
        ``result`` or ``error`` (with the remote traceback for an unexpected exception).
        """
        buffer = io.StringIO()
        channel = child.Channel(buffer)
        ctx = child.IsolatedContext(request["context"], channel)
        for folder in reversed(request.get("sys_path", [])):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        out, err = _Lines(channel, "stdout"), _Lines(channel, "stderr")
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                value = child.call(request, ctx)
        except KeyboardInterrupt:  # ray.cancel: the task ends as cancelled
            raise
        except BaseException as exc:  # noqa: BLE001 - a SystemExit too: reported, the actor stays
            kind = child._error_kind(exc)
            channel.send({
                "kind": "error", "error": kind, "type": type(exc).__name__, "message": str(exc),
                "traceback": "" if kind != "exception" else child._user_traceback(exc),
            })
        else:
            channel.send({"kind": "result", "value": value, "duration_s": time.perf_counter() - started})
        finally:
            out.close_partial()
            err.close_partial()
        return {"messages": buffer.getvalue(), "pid": os.getpid()}
