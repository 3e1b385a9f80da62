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


class TaskWorker:
    """One warm interpreter of the pool; `call` runs one task at a time (max_concurrency 1)."""

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
