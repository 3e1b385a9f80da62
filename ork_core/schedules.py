"""When a schedule's ticks fall, and what each tick stands for.

A tick is a time the cron expression names, in the schedule's time zone. The run made for
it has that tick as its *logical date*, and covers the interval from the tick before it up to
the tick itself: a ``0 6 * * *`` run on 3 December at 06:00 covers 2 December 06:00 to
3 December 06:00, and starts when that interval has ended. Daylight saving time is what
croniter makes of it (a time that does not exist that day moves to the next one that does;
a repeated hour fires once).

croniter was chosen over cronsim for its time-zone-aware iteration both ways (the interval
needs the tick *before*), its ``@daily``-style aliases, and its long record as the cron engine
of Airflow's own timetables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def cron_problem(expression: str) -> str | None:
    """Why `expression` is no five-field cron expression or alias, or None when it is one."""
    text = expression.strip()
    if text.startswith("@"):
        return None if text in ALIASES else f"unknown cron alias {text!r}; use one of {', '.join(ALIASES)}"
    fields = text.split()
    if len(fields) != 5:
        return (
            f"{expression!r} has {len(fields)} field{'s' * (len(fields) != 1)}; a cron expression has five: "
            "minute hour day-of-month month day-of-week (e.g. '0 6 * * *'), or an alias such as @daily"
        )
    try:
        croniter(text)
    except (ValueError, KeyError) as exc:  # croniter's errors are ValueErrors
        return f"{expression!r} is not a valid cron expression: {exc}"
    return None


@dataclass(frozen=True)
class Tick:
    """One tick: `ts` (epoch seconds) is the unique key of its run with workflow and schedule."""

    ts: int
    logical_date: str
    interval_start: str
    interval_end: str


@dataclass(frozen=True)
class Schedule:
    """A validated schedule of one workflow (see `docs/schedules.md` for the keys)."""

    key: str
    """Its ``name``, or its position in the workflow's ``schedule:`` list (``"0"``, ``"1"``…)."""
    cron: str
    timezone: str = "UTC"
    start: float | None = None
    """No tick before this (epoch seconds)."""
    end: float | None = None
    """No tick after this."""
    catchup: bool = False
    max_active_runs: int | None = 1
    """Runs from this schedule unfinished at once; None for no limit."""
    params: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    """Where the schedule is written in its file, for messages."""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _iter(self, at: float) -> croniter:
        return croniter(self.cron.strip(), datetime.fromtimestamp(at, self.zone))

    def tick(self, ts: float) -> Tick:
        """The tick at `ts` (a time the cron names), with the interval that ends there."""
        at = datetime.fromtimestamp(int(ts), self.zone)
        before: datetime = self._iter(int(ts)).get_prev(datetime)
        return Tick(int(ts), at.isoformat(), before.isoformat(), at.isoformat())

    def next_after(self, after: float) -> Tick | None:
        """The first tick strictly after `after`, within start/end; None when `end` is past."""
        lower = max(after, self.start - 1) if self.start is not None else after
        nxt: datetime = self._iter(int(lower)).get_next(datetime)
        ts = int(nxt.timestamp())
        if ts <= after:  # (a fraction of a second in `after`)
            return self.next_after(after + 1)
        if self.end is not None and ts > self.end:
            return None
        return self.tick(ts)

    def ticks(self, after: float | None, until: float) -> Iterator[Tick]:
        """Every tick in (`after`, `until`], in order; `after` None starts at `start` (required)."""
        if after is None:
            if self.start is None:
                return
            after = self.start - 1
        while True:
            tick = self.next_after(after)
            if tick is None or tick.ts > until:
                return
            yield tick
            after = tick.ts

    def latest(self, until: float) -> Tick | None:
        """The most recent tick at or before `until` (within start/end), None if there is none yet."""
        prev: datetime = self._iter(int(until) + 1).get_prev(datetime)
        ts = int(prev.timestamp())
        if self.end is not None and ts > self.end:
            tick = self.latest(self.end) if self.end < until else None
            return tick
        if self.start is not None and ts < self.start:
            return None
        return self.tick(ts)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "cron": self.cron, "timezone": self.timezone, "start": self.start, "end": self.end,
            "catchup": self.catchup, "max_active_runs": self.max_active_runs, "params": self.params, "line": self.line,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        return cls(**data)


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


__all__ = ["ALIASES", "Schedule", "Tick", "cron_problem", "utc_iso"]
