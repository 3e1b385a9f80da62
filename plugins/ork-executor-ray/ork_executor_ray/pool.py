"""A pool of warm Ray actors: handed out one task at a time, replaced when one dies.

Actors are created on the first task that needs them and killed by `close` at the end of
the run (or when a long-running scheduler closes its executors), so a run pays their start
once. An actor that died, or that was killed to stop a task it could not interrupt, is
replaced by a fresh one in its slot; the task itself is retried by ork's ``retries``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ork import TaskError


class ActorPool:
    """`size` actors made by `create`; `acquire` waits for an idle one (or a cancel)."""

    def __init__(self, create: Callable[[], Any], size: int, kill: Callable[[Any], None]) -> None:
        self._create = create
        self._kill = kill
        self._size = size
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._cond = threading.Condition()
        self._closed = False

    def acquire(self, cancelled: threading.Event) -> Any:
        with self._cond:
            while True:
                if self._closed:
                    raise TaskError("the Ray actor pool is closed (ork is stopping)")
                if cancelled.is_set():
                    raise TaskError("cancelled while waiting for a Ray actor")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) < self._size:
                    actor = self._create()
                    self._all.append(actor)
                    return actor
                self._cond.wait(0.1)

    def release(self, actor: Any) -> None:
        with self._cond:
            if actor in self._all and not self._closed:
                self._idle.append(actor)
                self._cond.notify()

    def discard(self, actor: Any) -> None:
        """Kill `actor` and free its slot: the next `acquire` creates a fresh one."""
        with self._cond:
            if actor in self._all:
                self._all.remove(actor)
            if actor in self._idle:
                self._idle.remove(actor)
            self._cond.notify()
        self._kill(actor)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            actors, self._all, self._idle = self._all, [], []
            self._cond.notify_all()
        for actor in actors:
            self._kill(actor)
