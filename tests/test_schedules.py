"""Schedules: croniter's tick math as ork uses it, and the ``schedule:`` key of a workflow file.

The DST tests pin down what croniter does on Europe/Berlin's change days, so a croniter
upgrade that changes it fails here instead of silently changing which runs exist.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orkhelpers import write
from ork_core.errors import WorkflowError
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.schedules import Schedule, cron_problem, parse_bound, timezone_problem
from ork_core.workflow import CompiledWorkflow, load_workflow

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, zone: ZoneInfo = UTC) -> int:
    return int(datetime(*args, tzinfo=zone).timestamp())  # type: ignore[misc]


def dates(schedule: Schedule, after: float | None, until: float) -> list[str]:
    return [t.logical_date for t in schedule.ticks(after, until)]


# -- ticks ----------------------------------------------------------------------------------


def test_ticks_are_those_in_after_until_in_order() -> None:
    daily = Schedule("0", "0 6 * * *")
    # `after` itself is excluded, `until` included
    assert dates(daily, ts(2026, 1, 1, 6), ts(2026, 1, 4, 6)) == [
        "2026-01-02T06:00:00+00:00", "2026-01-03T06:00:00+00:00", "2026-01-04T06:00:00+00:00",
    ]
    assert dates(daily, ts(2026, 1, 1, 6), ts(2026, 1, 2, 5, 59)) == []


def test_ticks_without_after_start_at_start_and_need_one() -> None:
    assert dates(Schedule("0", "0 6 * * *"), None, ts(2026, 1, 3)) == []
    bounded = Schedule("0", "0 6 * * *", start=ts(2026, 1, 1, 6))
    assert dates(bounded, None, ts(2026, 1, 2, 6)) == ["2026-01-01T06:00:00+00:00", "2026-01-02T06:00:00+00:00"]


def test_no_tick_before_start_or_after_end() -> None:
    s = Schedule("0", "0 6 * * *", start=ts(2026, 1, 3), end=ts(2026, 1, 5, 6))
    assert dates(s, ts(2026, 1, 1), ts(2026, 2, 1)) == [
        "2026-01-03T06:00:00+00:00", "2026-01-04T06:00:00+00:00", "2026-01-05T06:00:00+00:00",
    ]
    assert s.next_after(ts(2026, 1, 5, 6)) is None
    assert s.next_after(ts(2025, 6, 1)) == s.tick(ts(2026, 1, 3, 6))


def test_next_after_is_strictly_after_even_with_a_fraction() -> None:
    s = Schedule("0", "*/15 * * * *")
    at = ts(2026, 1, 1, 10, 15)
    nxt = s.next_after(at)
    assert nxt is not None and nxt.ts == at + 900
    nxt = s.next_after(at - 0.5)
    assert nxt is not None and nxt.ts == at


def test_latest_is_the_most_recent_tick_within_bounds() -> None:
    s = Schedule("0", "0 * * * *")
    tick = s.latest(ts(2026, 1, 1, 10, 59))
    assert tick is not None and tick.logical_date == "2026-01-01T10:00:00+00:00"
    tick = s.latest(ts(2026, 1, 1, 10))  # a tick at `until` counts
    assert tick is not None and tick.ts == ts(2026, 1, 1, 10)
    ended = Schedule("0", "0 * * * *", end=ts(2026, 1, 1, 3, 30))
    tick = ended.latest(ts(2026, 1, 2))
    assert tick is not None and tick.ts == ts(2026, 1, 1, 3)
    assert Schedule("0", "0 * * * *", start=ts(2026, 1, 2)).latest(ts(2026, 1, 1, 12)) is None


def test_a_tick_covers_the_interval_since_the_tick_before() -> None:
    tick = Schedule("0", "0 6 * * *").tick(ts(2026, 12, 3, 6))
    assert (tick.interval_start, tick.interval_end, tick.logical_date) == (
        "2026-12-02T06:00:00+00:00", "2026-12-03T06:00:00+00:00", "2026-12-03T06:00:00+00:00",
    )
    weekly = Schedule("0", "0 0 * * 1").tick(ts(2026, 12, 7))  # a Monday
    assert weekly.interval_start == "2026-11-30T00:00:00+00:00"


def test_ticks_are_in_the_schedules_time_zone() -> None:
    s = Schedule("0", "0 6 * * *", timezone="Europe/Berlin")
    tick = s.next_after(ts(2026, 1, 1))
    assert tick is not None
    assert tick.logical_date == "2026-01-01T06:00:00+01:00"
    assert tick.ts == ts(2026, 1, 1, 5)
    summer = s.next_after(ts(2026, 7, 1))
    assert summer is not None and summer.logical_date == "2026-07-01T06:00:00+02:00"


def test_dst_spring_forward_berlin_a_daily_time_that_does_not_exist_moves_to_0300() -> None:
    s = Schedule("0", "30 2 * * *", timezone="Europe/Berlin")
    got = dates(s, ts(2026, 3, 28, zone=BERLIN), ts(2026, 3, 31, zone=BERLIN))
    assert got == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_dst_spring_forward_berlin_hourly_skips_the_missing_hour() -> None:
    s = Schedule("0", "0 * * * *", timezone="Europe/Berlin")
    ticks = list(s.ticks(ts(2026, 3, 29, 1, zone=BERLIN), ts(2026, 3, 29, 4, zone=BERLIN)))
    assert [t.logical_date for t in ticks] == ["2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]
    assert ticks[1].ts - ticks[0].ts == 3600  # 01:00+01 → 03:00+02 is one real hour
    assert ticks[0].interval_start == "2026-03-29T01:00:00+01:00"


def test_dst_fall_back_berlin_a_daily_0230_fires_twice_once_per_offset() -> None:
    """croniter fires a time in the repeated hour at both offsets (docs/schedules.md says so)."""
    s = Schedule("0", "30 2 * * *", timezone="Europe/Berlin")
    got = dates(s, ts(2026, 10, 24, zone=BERLIN), ts(2026, 10, 26, zone=BERLIN))
    assert got == ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]


def test_dst_fall_back_berlin_hourly_fires_every_real_hour() -> None:
    s = Schedule("0", "0 * * * *", timezone="Europe/Berlin")
    ticks = list(s.ticks(ts(2026, 10, 25, 1, zone=BERLIN), ts(2026, 10, 25, 4, zone=BERLIN)))
    assert [t.logical_date for t in ticks] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00",
    ]
    assert {b.ts - a.ts for a, b in zip(ticks, ticks[1:])} == {3600}


def test_dst_fall_back_berlin_a_daily_0600_fires_once_and_covers_25_hours() -> None:
    s = Schedule("0", "0 6 * * *", timezone="Europe/Berlin")
    tick = s.tick(ts(2026, 10, 25, 6, zone=BERLIN))
    assert (tick.interval_start, tick.interval_end) == ("2026-10-24T06:00:00+02:00", "2026-10-25T06:00:00+01:00")
    assert len(dates(s, ts(2026, 10, 25, zone=BERLIN), ts(2026, 10, 26, zone=BERLIN))) == 1


@pytest.mark.parametrize(
    ("alias", "every"),
    [("@hourly", 3600), ("@daily", 86400), ("@midnight", 86400), ("@weekly", 7 * 86400)],
)
def test_aliases(alias: str, every: int) -> None:
    assert cron_problem(alias) is None
    ticks = list(Schedule("0", alias).ticks(ts(2026, 1, 1), ts(2026, 3, 1)))[:3]
    assert [b.ts - a.ts for a, b in zip(ticks, ticks[1:])] == [every, every]


def test_monthly_and_yearly_aliases() -> None:
    assert dates(Schedule("0", "@monthly"), ts(2026, 1, 1), ts(2026, 3, 1)) == ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]
    assert dates(Schedule("0", "@yearly"), ts(2026, 1, 1), ts(2028, 1, 1)) == ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]
    assert cron_problem("@annually") is None


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 6 * *", "has 4 fields; a cron expression has five"),
        ("0 6 * * * *", "has 6 fields"),
        ("", "has 0 fields"),
        ("61 * * * *", "is not a valid cron expression"),
        ("0 25 * * *", "is not a valid cron expression"),
        ("a b c d e", "is not a valid cron expression"),
        ("@sometimes", "unknown cron alias '@sometimes'; use one of @yearly"),
    ],
)
def test_bad_expressions(expression: str, words: str) -> None:
    problem = cron_problem(expression)
    assert problem is not None and words in problem


def test_a_date_that_never_comes_gives_no_tick_instead_of_raising() -> None:
    s = Schedule("0", "0 0 30 2 *")
    assert s.next_after(ts(2026, 1, 1)) is None
    assert s.latest(ts(2026, 1, 1)) is None
    assert list(s.ticks(ts(2026, 1, 1), ts(2027, 1, 1))) == []


def test_bounds_a_date_is_midnight_or_the_whole_day() -> None:
    assert parse_bound("2026-01-01", BERLIN, end=False) == ts(2026, 1, 1, zone=BERLIN)
    assert parse_bound("2026-12-31", BERLIN, end=True) == ts(2027, 1, 1, zone=BERLIN) - 1
    assert parse_bound("2026-01-01T06:00", BERLIN, end=False) == ts(2026, 1, 1, 6, zone=BERLIN)
    assert parse_bound("2026-01-01 06:00:00+00:00", BERLIN, end=False) == ts(2026, 1, 1, 6)
    with pytest.raises(ValueError, match="is not a date"):
        parse_bound("tomorrow", UTC, end=False)


def test_an_end_date_includes_the_ticks_on_that_day() -> None:
    s = Schedule("0", "0 23 * * *", start=parse_bound("2026-12-30", UTC, end=False), end=parse_bound("2026-12-31", UTC, end=True))
    assert dates(s, None, ts(2027, 2, 1)) == ["2026-12-30T23:00:00+00:00", "2026-12-31T23:00:00+00:00"]


def test_time_zone_problems_suggest_the_name_meant() -> None:
    assert timezone_problem("Europe/Berlin") is None
    assert timezone_problem("UTC") is None
    assert "did you mean 'Europe/Berlin'" in str(timezone_problem("Europe/Berln"))
    assert "did you mean 'Europe/Berlin'" in str(timezone_problem("europe/berlin"))
    assert "unknown time zone '../../etc/passwd'" in str(timezone_problem("../../etc/passwd"))


# -- the schedule: key -----------------------------------------------------------------------

TASKS = "def f(x: str = '') -> str:\n    return x\n"


def load(folder: Path, text: str) -> CompiledWorkflow:
    write(folder / "tasks.py", TASKS)
    path = write(folder / "wf.yaml", text)
    return load_workflow(path, Project.load(folder, build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})))


def problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(WorkflowError) as info:
        load(folder, text)
    return [f"{p.line}: {p.path}: {p.message}" for p in info.value.problems]


def test_one_mapping_compiles_to_one_schedule(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        name: w
        params: {region: us}
        schedule:
          cron: "0 6 * * *"
          timezone: Europe/Berlin
          start: 2026-01-01
          end: 2026-12-31
          catchup: true
          max_active_runs: 3
          params: {region: eu}
        tasks:
          a: {file: tasks.py, function: f, inputs: {x: {param: region}}}
        """)
    (s,) = wf.schedules
    assert (s.key, s.cron, s.timezone, s.catchup, s.max_active_runs, s.params, s.line) == (
        "0", "0 6 * * *", "Europe/Berlin", True, 3, {"region": "eu"}, 3,
    )
    assert s.start == ts(2026, 1, 1, zone=BERLIN)
    assert s.end == ts(2027, 1, 1, zone=BERLIN) - 1


def test_a_list_with_defaults_names_and_positions(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        name: w
        schedule:
          - cron: "@hourly"
          - {cron: "0 6 * * *", name: nightly, max_active_runs: null}
        tasks:
          a: {file: tasks.py, function: f}
        """)
    assert [(s.key, s.timezone, s.catchup, s.max_active_runs, s.start, s.end) for s in wf.schedules] == [
        ("0", "UTC", False, 1, None, None), ("nightly", "UTC", False, None, None, None),
    ]


def test_schedules_survive_the_stored_snapshot_and_old_snapshots_load(tmp_path: Path) -> None:
    wf = load(tmp_path, "name: w\nschedule: {cron: '@daily', timezone: Asia/Tokyo, name: d}\ntasks:\n  a: {file: tasks.py, function: f}\n")
    again = CompiledWorkflow.from_json(wf.to_json(), wf.hash)
    assert again.schedules == wf.schedules
    old = wf.to_json()
    del old["schedules"]
    assert CompiledWorkflow.from_json(old, wf.hash).schedules == []


def test_the_hash_changes_with_the_schedule(tmp_path: Path) -> None:
    base = "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n"
    hashes = {load(tmp_path, base + extra).hash for extra in ("", "schedule: {cron: '@daily'}\n", "schedule: {cron: '@hourly'}\n")}
    assert len(hashes) == 3


def test_every_schedule_problem_at_once_with_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        name: w
        params: {region: eu, day: null}
        schedule:
          - cron: "0 6 * * *"
            timezone: Europe/Berln
            start: 2026-01-01
            end: 2025-12-31
            catchup: 1
            colour: red
            params: {day: x}
          - cron: "0 6 * *"
            params: {regon: x, day: x}
          - {cron: "0 0 30 2 *", name: feb, params: {day: x}}
          - {cron: "@daily", name: feb, params: {day: x}}
          - {cron: "0 0 * * *", start: "2026-01-01T10:00", end: "2026-01-01T12:00", params: {day: x}}
          - {cron: "@daily", start: yesterday, max_active_runs: 0}
          - {cron: "@daily", name: "9lives", params: {day: x}}
          - "@daily"
        tasks:
          a: {file: tasks.py, function: f, inputs: {x: {param: day}}}
        """)
    assert found == [
        "8: schedule[0].catchup: expected true or false, got 1",
        "9: schedule[0].colour: unknown key 'colour'; valid keys: catchup, cron, end, max_active_runs, name, params, start, timezone",
        "5: schedule[0].timezone: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?); "
        "use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'",
        "7: schedule[0].end: end 2025-12-31 is before start 2026-01-01",
        "11: schedule[1].cron: '0 6 * *' has 4 fields; a cron expression has five: minute hour day-of-month month "
        "day-of-week (e.g. '0 6 * * *'), or an alias such as @daily",
        "12: schedule[1].params.regon: unknown run parameter 'regon' (did you mean 'region'?); the workflow declares: region, day",
        "13: schedule[2].cron: '0 0 30 2 *' never fires",
        "14: schedule[3].name: a second schedule named 'feb' (the first is at line 13); names must be unique",
        "15: schedule[4].cron: '0 0 * * *' never fires between 2026-01-01T10:00 and 2026-01-01T12:00",
        "16: schedule[5].max_active_runs: Input should be greater than or equal to 1 (got 0)",
        "16: schedule[5].start: 'yesterday' is not a date or a date and time; write it as 2026-01-01, "
        "2026-01-01T06:00 or 2026-01-01T06:00:00+01:00",
        "16: schedule[5]: the tasks bind parameter 'day', which has no default; give it in this schedule's params",
        "17: schedule[6].name: schedule name '9lives' must start with a letter or '_' and hold only letters, digits, '_' and '-'",
        "18: schedule[7]: a schedule must be a mapping with 'cron', not str",
    ]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("schedule: '0 6 * * *'", "2: schedule: expected a mapping with 'cron' (or a list of them), got str"),
        ("schedule: []", "2: schedule: an empty list; leave `schedule:` out"),
        ("schedule: {timezone: UTC}", "2: schedule.cron: required field is missing"),
        ("schedule: {cron: 5}", "2: schedule.cron: expected a string"),
        ("schedule: {cron: '@daily', start: 2026}", "2: schedule.start: expected a string"),
        ("schedule: {cron: '@daily', params: [a]}", "2: schedule.params: expected a mapping"),
        ("schedule: {cron: '@daily', max_active_runs: true}", "2: schedule.max_active_runs: expected"),
        ("schedule: {cron: '@daily', end: 2026-02-30}", "2: schedule.end: '2026-02-30' is not a date"),
    ],
)
def test_one_schedule_problem(tmp_path: Path, schedule: str, expected: str) -> None:
    (found,) = problems(tmp_path, f"name: w\n{schedule}\ntasks:\n  a: {{file: tasks.py, function: f}}\n")
    assert found.startswith(expected), found


def test_malformed_params_are_one_problem_not_two(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: w\nschedule: {cron: '@daily', params: [x]}\ntasks:\n  a: {file: tasks.py, function: f, inputs: {x: {param: x}}}\n")
    assert found == ["2: schedule.params: expected a mapping, got a list"], found


def test_a_schedules_params_take_the_type_of_their_default(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        name: w
        params: {n: 1, ratio: 0.5, flag: false, label: x, anything: null}
        schedule:
          cron: "@daily"
          params: {n: "2", ratio: 1, flag: 1, label: 5, anything: [1]}
        tasks:
          a: {file: tasks.py, function: f}
        """)
    assert found == [
        "5: schedule.params.n: expected an integer, as the parameter's default 1 is, got '2'",
        "5: schedule.params.flag: expected true or false, as the parameter's default False is, got 1",
        "5: schedule.params.label: expected a string, as the parameter's default 'x' is, got 5",
    ]


def test_without_declared_params_a_schedule_may_give_any(tmp_path: Path) -> None:
    """As `ork run --param`: a workflow that declares no params takes any."""
    wf = load(tmp_path, "name: w\nschedule: {cron: '@daily', params: {x: hi}}\ntasks:\n  a: {file: tasks.py, function: f, inputs: {x: {param: x}}}\n")
    assert wf.schedules[0].params == {"x": "hi"}
