"""Task slots shared by every run one process executes (`ork scheduler`'s ``max_concurrency``).

Each run's scheduler has its own limit; a process that executes many runs at once also needs
one across them, or 200 runs of 20 tasks start 4,000 tasks. A run that finds no slot free
waits to be woken: a slot given back wakes every run that waited, on the loop they share.
"""

from __future__ import annotations

from collections.abc import Callable


class SharedSlots:
    """A counter of running tasks across runs, with the runs waiting for a free slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: dict[int, Callable[[], None]] = {}

    def free(self) -> bool:
        return self.used < self.limit

    def take(self) -> None:
        self.used += 1

    def give(self) -> None:
        self.used -= 1
        if self._waiting:
            waiting, self._waiting = self._waiting, {}
            for wake in waiting.values():
                wake()

    def wait(self, key: int, wake: Callable[[], None]) -> None:
        """Call `wake` (once) when a slot is given back."""
        self._waiting[key] = wake

    def forget(self, key: int) -> None:
        self._waiting.pop(key, None)


__all__ = ["SharedSlots"]
