"""When a schedule's ticks fall, and what each tick stands for.

A tick is a time the cron expression names, in the schedule's time zone. The run made for
it has that tick as its *logical date*, and covers the interval from the tick before it up to
the tick itself: a ``0 6 * * *`` run on 3 December at 06:00 covers 2 December 06:00 to
3 December 06:00, and starts when that interval has ended. Daylight saving time is what
croniter makes of it: a time that does not exist that day moves to the next one that does,
and a time in a repeated hour fires at both offsets (a daily ``30 2 * * *`` runs twice on
the day Europe/Berlin falls back; tests/test_schedules.py pins this down).

croniter was chosen over cronsim for its time-zone-aware iteration both ways (the interval
needs the tick *before*), its ``@daily``-style aliases, and its long record as the cron engine
of Airflow's own timetables.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ork_core.errors import Problem
from ork_core.yamlfile import YamlDoc, suggest, validation_problems

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
        try:
            nxt: datetime = self._iter(int(lower)).get_next(datetime)
        except CroniterBadDateError:  # a date that never comes, such as 30 February
            return None
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
        try:
            prev: datetime = self._iter(int(until) + 1).get_prev(datetime)
        except CroniterBadDateError:
            return None
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


# -- the ``schedule:`` key of a workflow file ------------------------------------------------

SCHEDULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
"""A name starts with a letter or '_', so it never looks like a position ("0", "1"…)."""
MAX_ACTIVE_RUNS = 10_000


class ScheduleModel(BaseModel):
    """One entry of a workflow's ``schedule:``, as written (see `docs/schedules.md`).

    Strict like a task (YAML ``true`` is not 1). ``start`` and ``end`` are strings: ork's YAML
    keeps ``2026-01-01`` as written, and what it means depends on ``timezone``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    cron: str
    timezone: str = "UTC"
    start: str | None = None
    end: str | None = None
    catchup: bool = False
    max_active_runs: int | None = Field(default=1, ge=1, le=MAX_ACTIVE_RUNS)
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None


SCHEDULE_KEYS = frozenset(ScheduleModel.model_fields)


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def timezone_problem(name: str) -> str | None:
    """Why `name` is no IANA time zone, with the one it most likely means, or None."""
    if name in _zones():
        try:
            ZoneInfo(name)
            return None
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    same = [z for z in _zones() if z.lower() == name.lower()]
    hint = f" (did you mean {same[0]!r}?)" if same else suggest(name, _zones())
    return f"unknown time zone {name!r}{hint}; use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'"


def parse_bound(text: str, zone: ZoneInfo, *, end: bool) -> float:
    """Epoch seconds of a ``start``/``end``: a date, or a date and time (in `zone` unless it has an offset).

    A date as ``end`` includes every tick on that day, which is what ``end: 2026-12-31`` is
    read as; a date as ``start`` is midnight. Raises ValueError with the reason.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if end:
                day += timedelta(days=1)
            midnight = datetime.combine(day, time(), zone).timestamp()
            return midnight - 1 if end else midnight
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or a date and time; write it as 2026-01-01, 2026-01-01T06:00 or 2026-01-01T06:00:00+01:00"
        ) from None
    return (at if at.tzinfo is not None else at.replace(tzinfo=zone)).timestamp()


def _type_problem(value: Any, default: Any) -> str | None:
    """Why `value` cannot stand in for a parameter whose default is `default` (as ``--param`` converts to it)."""
    if default is None or value is None:
        return None
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "true or false"), (int, "an integer"), (float, "a number"), (str, "a string"),
        (list, "a list"), (dict, "a mapping"),
    )
    for kind, words in kinds:
        if isinstance(default, kind):
            fits = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if isinstance(value, bool) and kind is not bool:
                fits = False
            return None if fits else f"expected {words}, as the parameter's default {default!r} is, got {value!r}"
    return None


def compile_schedules(
    doc: YamlDoc, raw: Any, *, declared: Mapping[str, Any], required: set[str], problems: list[Problem],
) -> list[Schedule]:
    """The workflow's ``schedule:`` (one mapping or a list of them) as `Schedule` objects.

    Every problem is appended to `problems`, so one ``ork validate`` shows them all; a
    schedule with a problem is left out of the result. `declared` is the workflow's
    ``params``; `required` the parameters its tasks bind that have no default, which a
    schedule's run would lack unless the schedule gives them.
    """
    if raw is None:
        return []
    entries: list[tuple[tuple[str | int, ...], Any]]
    if isinstance(raw, dict):
        entries = [(("schedule",), raw)]
    elif isinstance(raw, list):
        if not raw:
            problems.append(doc.problem(("schedule",), "an empty list; leave `schedule:` out for a workflow that runs only when started"))
        entries = [(("schedule", i), item) for i, item in enumerate(raw)]
    else:
        problems.append(doc.problem(("schedule",), f"expected a mapping with 'cron' (or a list of them), got {type(raw).__name__}"))
        return []
    schedules: list[Schedule] = []
    keys: dict[str, tuple[str | int, ...]] = {}
    for position, (where, item) in enumerate(entries):
        before = len(problems)
        if not isinstance(item, dict):
            problems.append(doc.problem(where, f"a schedule must be a mapping with 'cron', not {type(item).__name__}"))
            continue
        bad: set[Any] = set()
        try:
            model = ScheduleModel.model_validate(item)
        except ValidationError as exc:
            problems += validation_problems(doc, exc, where, valid_keys={where: SCHEDULE_KEYS})
            # The keys that are right are still checked, so one `ork validate` shows every problem.
            bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
            try:
                model = ScheduleModel.model_validate({k: v for k, v in item.items() if k not in bad})
            except ValidationError:  # `cron` missing or wrong: reported above
                continue
        key = str(position)
        if model.name is not None:
            if not SCHEDULE_NAME.fullmatch(model.name):
                problems.append(doc.problem(where + ("name",), f"schedule name {model.name!r} must start with a letter or '_' and hold only letters, digits, '_' and '-'"))
            key = model.name
        if key in keys:
            problems.append(doc.problem(where + ("name",), f"a second schedule named {key!r} (the first is at line {doc.line(keys[key])}); names must be unique"))
        keys.setdefault(key, where)
        why = cron_problem(model.cron)
        if why:
            problems.append(doc.problem(where + ("cron",), why))
        why = timezone_problem(model.timezone)
        if why:
            problems.append(doc.problem(where + ("timezone",), why))
        zone = ZoneInfo("UTC" if why else model.timezone)  # with a bad zone, the bounds' form is still checked
        bounds: dict[str, float] = {}
        for bound in ("start", "end"):
            text = getattr(model, bound)
            if text is not None:
                try:
                    bounds[bound] = parse_bound(text, zone, end=bound == "end")
                except ValueError as exc:
                    problems.append(doc.problem(where + (bound,), str(exc)))
        start, end = bounds.get("start"), bounds.get("end")
        if start is not None and end is not None and end < start:
            problems.append(doc.problem(where + ("end",), f"end {model.end} is before start {model.start}"))
        for param, value in model.params.items():
            if declared and param not in declared:
                problems.append(doc.problem(
                    where + ("params", param),
                    f"unknown run parameter {param!r}{suggest(param, declared)}; the workflow declares: {', '.join(declared)}",
                ))
            elif (wrong := _type_problem(value, declared.get(param))) is not None:
                problems.append(doc.problem(where + ("params", param), wrong))
        for param in sorted(required - set(model.params) if "params" not in bad else ()):
            problems.append(doc.problem(
                where + ("params",) if "params" in item else where,
                f"the tasks bind parameter {param!r}, which has no default; give it in this schedule's params",
            ))
        if len(problems) > before:
            continue
        schedule = Schedule(
            key=key, cron=model.cron, timezone=model.timezone, start=start, end=end, catchup=model.catchup,
            max_active_runs=model.max_active_runs, params=dict(model.params), line=doc.line(where),
        )
        if schedule.next_after(start - 1 if start is not None else 0) is None:
            span = f" between {model.start or 'its start'} and {model.end}" if end is not None else ""
            problems.append(doc.problem(where + ("cron",), f"{model.cron!r} never fires{span}"))
            continue
        schedules.append(schedule)
    return schedules


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


__all__ = [
    "ALIASES", "SCHEDULE_KEYS", "Schedule", "ScheduleModel", "Tick", "compile_schedules", "cron_problem", "parse_bound",
    "timezone_problem", "utc_iso",
]
