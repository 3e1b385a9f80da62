"""`ork scheduler` and schedules, on real processes with the clock sped up (ORK_CLOCK), never real minutes.

Every check of "one run per tick" reads the database by logical date.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from orkhelpers import write
from servicehelpers import Schedulers, ork, ork_env, rows, wait_until

from ork_core.schedules import Schedule

T0 = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp())
"""A Monday, midnight UTC: the fake clocks below start from here."""

TASKS = """
import time

def quick() -> int:
    return 1

def nap(seconds: float = 0.3) -> float:
    time.sleep(seconds)
    return seconds
"""


def project_with(project: Path, workflow: str) -> Path:
    write(project / "flows" / "tasks.py", TASKS)
    write(project / "ork.yaml", "workflows: ['flows/*.yaml']\n")
    return write(project / "flows" / "w.yaml", workflow)


def clock(start: float, speed: float = 1.0) -> dict[str, str]:
    """An environment whose processes all agree that it is `start` now, and time runs `speed` times fast."""
    return ork_env(ORK_CLOCK=f"{start}*{speed}@{time.time()}")


def ticks(db: Path, trigger: str = "schedule") -> list[int]:
    return [r[0] for r in rows(db, "SELECT logical_ts FROM runs WHERE triggered_by=? ORDER BY created_at, rowid", (trigger,))]


def test_catchup_creates_exactly_the_missed_runs_in_order_and_one_at_a_time(project: Path, schedulers: Schedulers) -> None:
    project_with(project, f"""
        name: w
        schedule: {{cron: "*/10 * * * *", catchup: true, start: "2026-06-01T00:00:00+00:00", max_active_runs: 1}}
        tasks:
          a: {{file: tasks.py, function: nap, inputs: {{seconds: {{const: 0.05}}}}}}
        """)
    db = project / ".ork" / "ork.db"
    env = clock(T0 + 2 * 3600 + 5)  # two hours and 5 s after start: ticks 00:00 … 02:00
    proc = schedulers.start(env=env)
    expected = [T0 + 600 * i for i in range(13)]
    wait_until(lambda: len(rows(db, "SELECT 1 FROM runs WHERE status='success'")) == 13, "the 13 caught-up runs")
    assert ticks(db) == expected
    spans = rows(db, "SELECT started_at, finished_at FROM runs ORDER BY logical_ts")
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:])), "max_active_runs 1: no two at once"
    first = rows(db, "SELECT logical_date, interval_start, interval_end FROM runs ORDER BY logical_ts LIMIT 2")
    assert first[1] == ("2026-06-01T00:10:00+00:00", "2026-06-01T00:00:00+00:00", "2026-06-01T00:10:00+00:00")
    code, err = schedulers.stop(proc)
    assert code == 143, err


def test_kill_9_while_creating_and_running_never_duplicates_or_skips_a_tick(project: Path, schedulers: Schedulers) -> None:
    project_with(project, """
        name: w
        schedule: {cron: "* * * * *", catchup: true, start: "2026-06-01T00:00:00+00:00", max_active_runs: 40}
        tasks:
          a: {file: tasks.py, function: nap, inputs: {seconds: {const: 0.02}}}
          b: {file: tasks.py, function: quick, depends_on: [a]}
        """)
    db = project / ".ork" / "ork.db"
    now = T0 + 12 * 3600  # 721 ticks missed; one pass creates at most 500
    env = clock(now, 1.0)
    rng = random.Random(12)
    for moment in ("creating", "running", "running"):
        proc = schedulers.start(env=env)
        if moment == "creating":
            wait_until(lambda: len(rows(db, "SELECT 1 FROM runs")) > rng.randint(1, 300), "some runs created")
        else:
            done = len(rows(db, "SELECT 1 FROM runs WHERE status='success'"))
            wait_until(lambda: len(rows(db, "SELECT 1 FROM runs WHERE status='success'")) > done + rng.randint(5, 60),
                       "runs to go on")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    schedulers.start(env=env)
    expected = [t.ts for t in Schedule("0", "* * * * *", start=T0).ticks(None, now)]
    wait_until(lambda: len(rows(db, "SELECT 1 FROM runs WHERE status='success'")) >= len(expected), "every tick's run",
               timeout=240)
    assert sorted(ticks(db)) == expected  # none twice, none missing (the clock moved on a little: maybe more)
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT logical_ts) FROM runs") == [(len(expected), len(expected))]
    assert rows(db, "SELECT DISTINCT status FROM tasks") == [("success",)]
    # an attempt cut short by a kill is in the history as such; none that had succeeded ran again
    assert rows(db, "SELECT COUNT(*) FROM attempts WHERE status = 'success'") == [(0,)]


def test_pause_and_unpause_without_catchup_run_only_the_next_tick(project: Path, schedulers: Schedulers) -> None:
    project_with(project, """
        name: w
        schedule: {cron: "* * * * *", max_active_runs: null}
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    db = project / ".ork" / "ork.db"
    env = clock(T0 + 30, 60.0)  # a minute a second
    schedulers.start(env=env)
    wait_until(lambda: len(ticks(db)) >= 2, "two ticks")
    assert ork(project, "pause", "w", env=env).returncode == 0
    paused_at = max(ticks(db))
    time.sleep(4)  # four ticks go by
    before = ticks(db)
    assert max(before) <= paused_at + 60  # (a tick may have been in flight when the pause landed)
    assert ork(project, "unpause", "w", env=env).returncode == 0
    resumed_at = time.time()
    wait_until(lambda: len(ticks(db)) >= len(before) + 2, "ticks again")
    after = [t for t in ticks(db) if t not in before]
    gap = after[0] - max(before)
    assert gap >= 3 * 60, f"the missed ticks were made up for: {before} then {after}"
    assert all(b - a == 60 for a, b in zip(after, after[1:]))
    assert resumed_at > 0


def test_pause_and_unpause_with_catchup_make_up_for_the_missed_ticks(project: Path, schedulers: Schedulers) -> None:
    project_with(project, """
        name: w
        schedule: {cron: "* * * * *", catchup: true, max_active_runs: null}
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    db = project / ".ork" / "ork.db"
    env = clock(T0 + 30, 60.0)
    schedulers.start(env=env)
    wait_until(lambda: len(ticks(db)) >= 2, "two ticks")
    assert ork(project, "pause", "w", env=env).returncode == 0
    time.sleep(4)
    count = len(ticks(db))
    assert ork(project, "unpause", "w", env=env).returncode == 0
    wait_until(lambda: len(ticks(db)) >= count + 4, "the missed ticks")
    got = sorted(ticks(db))
    assert all(b - a == 60 for a, b in zip(got, got[1:])), got  # no gap: every tick of the pause has its run
    assert len(got) == len(set(got))


def test_max_active_runs_holds(project: Path, schedulers: Schedulers) -> None:
    project_with(project, """
        name: w
        schedule: {cron: "* * * * *", catchup: true, start: "2026-06-01T00:00:00+00:00", max_active_runs: 2}
        tasks:
          a: {file: tasks.py, function: nap, inputs: {seconds: {const: 0.3}}}
        """)
    db = project / ".ork" / "ork.db"
    schedulers.start(env=clock(T0 + 9 * 60 + 1))
    wait_until(lambda: len(rows(db, "SELECT 1 FROM runs WHERE status='success'")) == 10, "ten runs")
    spans = rows(db, "SELECT started_at, finished_at FROM runs")
    most = max(sum(1 for s, f in spans if s <= at < f) for at, _ in spans)
    assert most == 2, spans


def test_backfill_twice_creates_nothing_the_second_time(project: Path, schedulers: Schedulers) -> None:
    project_with(project, """
        name: w
        schedule: {cron: "@daily", timezone: Europe/Berlin}
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    db = project / ".ork" / "ork.db"
    first = ork(project, "backfill", "w", "--start", "2026-01-01", "--end", "2026-01-05", "--max-active", "2")
    assert first.returncode == 0 and "5 run(s) queued, 0 tick(s)" in first.stdout, first.stdout + first.stderr
    again = ork(project, "backfill", "w", "--start", "2026-01-03", "--end", "2026-01-07")
    assert "2 run(s) queued, 3 tick(s) in the range had a run already" in again.stdout, again.stdout + again.stderr
    dates = [r[0] for r in rows(db, "SELECT logical_date FROM runs ORDER BY logical_ts")]
    assert dates == [f"2026-01-0{d}T00:00:00+01:00" for d in range(1, 8)]
    schedulers.start(env=clock(T0))
    wait_until(lambda: len(rows(db, "SELECT 1 FROM runs WHERE triggered_by='backfill' AND status='success'")) == 7,
               "the backfill to run")
    bad = ork(project, "backfill", "w", "--start", "2026-01-05", "--end", "2026-01-01")
    assert bad.returncode == 2 and "before --start" in bad.stderr


def test_a_file_edited_to_be_invalid_keeps_its_schedule_and_is_reported(project: Path, schedulers: Schedulers) -> None:
    path = project_with(project, """
        name: w
        schedule: {cron: "* * * * *", max_active_runs: null}
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    db = project / ".ork" / "ork.db"
    proc = schedulers.start(env=clock(T0 + 30, 60.0))
    wait_until(lambda: len(ticks(db)) >= 1, "a tick")
    path.write_text(path.read_text().replace('"* * * * *"', '"61 * * * *"'))
    wait_until(lambda: "is invalid" in schedulers.log(proc), "the scheduler to notice the edit (it looks every 5 s)")
    count = len(ticks(db))
    wait_until(lambda: len(ticks(db)) >= count + 3, "ticks to go on with the last good version")
    code, err = schedulers.stop(proc)
    assert "is invalid; its last good version keeps its schedule" in err and "61 * * * *" in err, err


def test_schedules_lists_what_the_scheduler_serves(project: Path, schedulers: Schedulers) -> None:
    import json

    project_with(project, """
        name: w
        schedule:
          - {cron: "0 6 * * *", timezone: Europe/Berlin, name: morning}
          - {cron: "@hourly"}
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    env = clock(T0 + 30)
    proc = schedulers.start(env=env)
    db = project / ".ork" / "ork.db"
    wait_until(lambda: len(rows(db, "SELECT 1 FROM schedules")) == 2, "the schedules to be recorded")
    schedulers.stop(proc)
    assert ork(project, "pause", "w").returncode == 0
    listed = json.loads(ork(project, "schedules", "--json", env=env).stdout)
    assert [(s["schedule"], s["cron"], s["timezone"], s["paused"]) for s in listed] == [
        ("1", "@hourly", "UTC", True), ("morning", "0 6 * * *", "Europe/Berlin", True)]
    unknown = ork(project, "pause", "ww")
    assert unknown.returncode == 2 and "did you mean" in unknown.stderr


MARKS = """
import os, time
from pathlib import Path
from ork import Context

HERE = Path(__file__).parent

def mark(ctx: Context) -> str:
    fd = os.open(HERE / "marks", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{ctx.run_id} {ctx.task_name}\\n".encode())
    finally:
        os.close(fd)
    return ctx.task_name

def gate(ctx: Context) -> str:
    while not (HERE / "go").exists():
        time.sleep(0.02)
    return mark(ctx)
"""


def test_two_schedulers_on_one_sqlite_file_share_the_ticks_and_the_limit_and_adopt_a_killed_ones_runs(
    project: Path, schedulers: Schedulers
) -> None:
    project_with(project, """
        name: w
        schedule: {cron: "* * * * *", catchup: true, start: "2026-06-01T00:00:00+00:00", max_active_runs: 4}
        tasks:
          a: {file: marks.py, function: mark}
          b: {file: marks.py, function: gate, depends_on: [a]}
        """)
    write(project / "flows" / "marks.py", MARKS)
    db = project / ".ork" / "ork.db"
    now = T0 + 19 * 60 + 30  # 20 ticks to catch up
    env = clock(now, 1.0)
    procs = [schedulers.start(env=env), schedulers.start(env=env)]
    running = "SELECT owner FROM runs WHERE status = 'running'"
    wait_until(lambda: len(rows(db, running)) >= 4, "four runs waiting at their gate")
    time.sleep(1.0)  # ten passes each: neither starts a fifth
    owners = [r[0] for r in rows(db, running)]
    assert len(owners) == 4 and len(rows(db, "SELECT 1 FROM runs")) == 20, owners
    victim = next(p for p in procs if any(o.split("/")[1] == str(p.pid) for o in owners))
    survivor = next(p for p in procs if p is not victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    (project / "flows" / "go").touch()
    wait_until(lambda: rows(db, "SELECT COUNT(*) FROM runs WHERE status = 'success'") == [(20,)], "every tick's run",
               timeout=120)
    assert time.monotonic() - killed < 20, "waited for the 30 s lease of a process this host can see is gone"
    assert sorted(ticks(db)) == [T0 + 60 * i for i in range(20)]
    ran = sorted((project / "flows" / "marks").read_text().splitlines())
    assert ran == sorted(f"{r[0]} {t}" for r in rows(db, "SELECT id FROM runs") for t in "ab")  # none twice
    code, log = schedulers.stop(survivor)
    assert code == 143, log
    assert "resumed" in log  # the victim's runs, taken at once: its pid is gone from this host
