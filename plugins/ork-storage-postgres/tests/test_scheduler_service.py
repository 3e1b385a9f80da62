"""`ork scheduler` on PostgreSQL: it starts the runs `ork trigger` queued, and adopts those of a killed scheduler."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_cli import ork, ork_process, wait_for, write
from ork_storage_postgres.storage import PostgresStorage

TASKS = """
from pathlib import Path

def quick(x: int = 1) -> int:
    return x

def flaky() -> str:
    if not (Path(__file__).parent / "fixed").exists():
        raise RuntimeError("not fixed yet")
    return "fixed"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "flows" / "tasks.py", TASKS)
    write(tmp_path / "ork.yaml", "workflows: ['flows/*.yaml']\n")
    return tmp_path


@pytest.fixture
def schedulers(project: Path, pg_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    """`ork scheduler` processes of a test, killed at its end if still there."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def run_of(url: str, run_id: str) -> tuple[str, dict[str, tuple[str, int, object]]]:
    storage = PostgresStorage(url)
    try:
        run = storage.get_run(run_id)
        return run.status, {n: (t.status, t.attempt, t.output) for n, t in run.tasks.items()}
    finally:
        storage.close()


def test_a_triggered_run_is_started_by_the_scheduler(project: Path, pg_url: str, schedulers: list[subprocess.Popen[str]]) -> None:
    write(project / "flows" / "w.yaml", """
        name: w
        params: {x: 1}
        tasks:
          a: {file: tasks.py, function: quick, inputs: {x: {param: x}}}
        """)
    code, out, err = ork(["trigger", "w", "--param", "x=5"], project, pg_url)
    assert code == 0, err
    run_id = out.strip()
    assert run_of(pg_url, run_id)[0] == "queued"
    schedulers.append(ork_process(["scheduler", "--poll", "0.1"], project, pg_url))
    wait_for(lambda: run_of(pg_url, run_id)[0] == "success", timeout=60)
    assert run_of(pg_url, run_id)[1] == {"a": ("success", 1, 5)}
    schedulers[0].send_signal(signal.SIGTERM)
    _, err = schedulers[0].communicate(timeout=60)
    assert schedulers[0].returncode == 128 + signal.SIGTERM, err
    assert f"run {run_id} w: success" in err


def test_a_restarted_scheduler_adopts_the_runs_of_a_killed_one(
    project: Path, pg_url: str, schedulers: list[subprocess.Popen[str]]
) -> None:
    write(project / "flows" / "w.yaml", """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
          b: {file: tasks.py, function: flaky, depends_on: [a], retries: 50, retry_delay: 0.2}
        """)
    code, out, err = ork(["trigger", "w"], project, pg_url)
    assert code == 0, err
    run_id = out.strip()
    schedulers.append(ork_process(["scheduler", "--poll", "0.1"], project, pg_url))
    wait_for(lambda: run_of(pg_url, run_id)[1]["b"][1] >= 2, timeout=60)
    schedulers[0].send_signal(signal.SIGKILL)
    schedulers[0].communicate()
    (project / "flows" / "fixed").write_text("")
    schedulers.append(ork_process(["scheduler", "--poll", "0.1"], project, pg_url))
    wait_for(lambda: run_of(pg_url, run_id)[0] == "success", timeout=60)
    tasks = run_of(pg_url, run_id)[1]
    assert tasks["a"] == ("success", 1, 1) and tasks["b"][0] == "success" and tasks["b"][2] == "fixed"


def test_catch_up_killed_while_creating_makes_one_run_per_tick(
    project: Path, pg_url: str, schedulers: list[subprocess.Popen[str]]
) -> None:
    """The per-tick unique key on PostgreSQL, through `ork scheduler` killed with SIGKILL mid-catch-up."""
    import time
    from datetime import datetime, timezone

    import psycopg

    from ork_core.schedules import Schedule

    t0 = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp())
    now = t0 + 3600  # 61 ticks missed
    write(project / "flows" / "w.yaml", """
        name: w
        schedule: {cron: "* * * * *", catchup: true, start: "2026-06-01T00:00:00+00:00", max_active_runs: 20}
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    env = {"ORK_CLOCK": f"{now}*1@{time.time()}"}

    def count(query: str) -> int:
        with psycopg.connect(pg_url) as conn:
            try:
                (n,) = conn.execute(query).fetchone()  # type: ignore[misc]
            except psycopg.errors.UndefinedTable:
                return 0
        return int(n)

    schedulers.append(ork_process(["scheduler", "--poll", "0.1"], project, pg_url, env))
    wait_for(lambda: count("SELECT count(*) FROM runs") > 5, timeout=60)
    schedulers[0].send_signal(signal.SIGKILL)
    schedulers[0].communicate()
    schedulers.append(ork_process(["scheduler", "--poll", "0.1"], project, pg_url, env))
    expected = [t.ts for t in Schedule("0", "* * * * *", start=t0).ticks(None, now)]
    wait_for(lambda: count("SELECT count(*) FROM runs WHERE status = 'success'") >= len(expected), timeout=180)
    with psycopg.connect(pg_url) as conn:
        got = [r[0] for r in conn.execute("SELECT logical_ts FROM runs WHERE triggered_by = 'schedule' ORDER BY logical_ts")]
        assert conn.execute("SELECT count(*), count(DISTINCT logical_ts) FROM runs").fetchone() == (len(got), len(got))
    assert len(expected) == 61, expected
    assert got[: len(expected)] == expected  # none twice, none missing (the clock moved on: maybe one more)
