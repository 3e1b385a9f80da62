"""Several `ork scheduler`s on one PostgreSQL database: one run per tick, one scheduler per run, adoption after the lease.

Each scheduler gets its own ``ORK_HOST``, so that to each the other is on another machine,
whose process it cannot check: only the lease tells it when the other is gone. Tasks append
a line per execution to a file opened with O_APPEND, so "ran once" is counted, not assumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from pg_cli import ork, wait_for, write
from ork_core.schedules import Schedule

T0 = int(datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp())
LEASE = 2.0

TASKS = """
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


class Schedulers:
    """`ork scheduler` processes, each as its own "host", logging to a file; all killed at the end."""

    def __init__(self, project: Path, url: str) -> None:
        self.project, self.url = project, url
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, host: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("ORK_", "PG"))}
        full.update({"ORK_DB": self.url, "ORK_HOST": host, "ORK_SCHEDULER_LEASE": str(LEASE), **(env or {})})
        with (self.project.parent / f"{host}.log").open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "ork_core", "scheduler", "--poll", "0.1"], cwd=self.project,
                                    env=full, stdout=out, stderr=subprocess.STDOUT, text=True)
        self.procs[host] = proc
        return proc

    def log(self, host: str) -> str:
        return (self.project.parent / f"{host}.log").read_text()

    def stop(self, host: str) -> int:
        proc = self.procs[host]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    write(folder / "flows" / "tasks.py", TASKS)
    write(folder / "ork.yaml", "workflows: ['flows/*.yaml']\n")
    return folder


@pytest.fixture
def schedulers(project: Path, pg_url: str) -> Iterator[Schedulers]:
    s = Schedulers(project, pg_url)
    yield s
    s.close()


def query(url: str, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(sql, args).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def marks(project: Path) -> list[str]:
    path = project / "flows" / "marks"
    return path.read_text().splitlines() if path.exists() else []


def test_two_schedulers_make_each_tick_one_run_and_execute_it_once(
    project: Path, pg_url: str, schedulers: Schedulers
) -> None:
    write(project / "flows" / "w.yaml", """
        name: w
        schedule: {cron: "* * * * *", catchup: true, start: "2026-06-01T00:00:00+00:00", max_active_runs: 8}
        tasks:
          a: {file: tasks.py, function: mark}
          b: {file: tasks.py, function: mark, depends_on: [a]}
        """)
    now = T0 + 40 * 60  # 41 ticks to catch up, then a tick every 2 s (a minute every 2 s)
    origin = time.time()
    env = {"ORK_CLOCK": f"{now}*30@{origin}"}  # the same origin: both agree what time it is
    schedulers.start("host-a", env)
    schedulers.start("host-b", env)
    time.sleep(6)  # catch-up, raced by both, then live ticks
    until = now + 30 * (time.time() - origin) - 60  # (a tick in flight now may or may not have its run yet)
    expected = [t.ts for t in Schedule("0", "* * * * *", start=T0).ticks(None, until)]
    assert len(expected) >= 41 + 2
    wait_for(lambda: len(query(pg_url, "SELECT 1 FROM runs WHERE status = 'success'")) >= len(expected), timeout=120)
    assert schedulers.stop("host-a") == 128 + signal.SIGTERM
    assert schedulers.stop("host-b") == 128 + signal.SIGTERM
    got = [r[0] for r in query(pg_url, "SELECT logical_ts FROM runs ORDER BY logical_ts")]
    assert len(got) == len(set(got)), "a tick has two runs"
    assert got[: len(expected)] == expected, "a tick has no run"
    runs = {r[0] for r in query(pg_url, "SELECT id FROM runs WHERE status = 'success'")}
    lines = marks(project)
    assert sorted(lines) == sorted(f"{run} {task}" for run in runs for task in "ab")  # each task of each run once
    assert query(pg_url, "SELECT count(*) FROM runs WHERE owner IS NOT NULL OR lease_until IS NOT NULL") == [(0,)]
    logs = schedulers.log("host-a") + schedulers.log("host-b")
    assert "adopted" not in logs  # neither stole a run from the other, alive


def test_a_killed_schedulers_run_is_finished_by_the_other_after_its_lease(
    project: Path, pg_url: str, schedulers: Schedulers
) -> None:
    write(project / "flows" / "w.yaml", """
        name: w
        tasks:
          a: {file: tasks.py, function: mark}
          b: {file: tasks.py, function: gate, depends_on: [a]}
          c: {file: tasks.py, function: mark, depends_on: [b]}
        """)
    code, out, err = ork(["trigger", "w"], project, pg_url)
    assert code == 0, err
    run_id = out.strip()

    def owner() -> str | None:
        rows = query(pg_url, "SELECT owner FROM runs WHERE id = %s", (run_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def status(task: str) -> str:
        return str(query(pg_url, "SELECT status FROM tasks WHERE run_id = %s AND name = %s", (run_id, task))[0][0])

    first = schedulers.start("host-a")
    wait_for(lambda: status("b") == "running", timeout=60)
    schedulers.start("host-b")
    wait_for(lambda: "serving" in schedulers.log("host-b"), timeout=60)
    time.sleep(0.5)  # host-b has looked at the run a few times: it is host-a's, leased
    assert (owner() or "").startswith("host-a/")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    (project / "flows" / "go").touch()
    time.sleep(0.5)
    assert (owner() or "").startswith("host-a/"), "adopted before the lease ended"
    wait_for(lambda: query(pg_url, "SELECT status FROM runs WHERE id = %s", (run_id,)) == [("success",)], timeout=60)
    waited = time.monotonic() - killed  # (what is left of the run takes milliseconds)
    # renewed at most a third of a lease before the kill, so at least two thirds of it were left
    assert LEASE * 2 / 3 - 0.2 <= waited <= LEASE + 3, waited
    assert sorted(marks(project)) == [f"{run_id} a", f"{run_id} b", f"{run_id} c"]  # a not run again
    attempts = query(pg_url, "SELECT task, status FROM attempts WHERE run_id = %s", (run_id,))
    assert ("a", "success") not in attempts
    assert "adopted from process" in schedulers.log("host-b") and "host-a" in schedulers.log("host-b")
    assert schedulers.stop("host-b") == 128 + signal.SIGTERM


def test_a_killed_schedulers_deferred_job_is_tracked_by_the_other_not_submitted_again(
    project: Path, pg_url: str, schedulers: Schedulers
) -> None:
    """The http plugin's test server counts kickoffs: the adopting scheduler polls the job the dead one started."""
    pytest.importorskip("ork_executor_http")
    http_tests = Path(__file__).resolve().parents[2] / "ork-executor-http" / "tests"
    sys.path.insert(0, str(http_tests))
    try:
        from http_harness import job_task
        from http_test_server import JobServer
    finally:
        sys.path.remove(str(http_tests))
    import yaml

    with JobServer() as server:
        executors = {"jobs": {"type": "http_async", "config": {"base_url": server.url, "timeout": 2}}}
        write(project / "ork.yaml", yaml.safe_dump({"workflows": ["flows/*.yaml"], "executors": executors}))
        tasks = {"first": {"file": "tasks.py", "function": "mark"},
                 "query": {**job_task(job={"outcome": "forever"}, poll_interval=0.1), "depends_on": ["first"]}}
        write(project / "flows" / "w.yaml", yaml.safe_dump({"name": "w", "tasks": tasks}, sort_keys=False))
        code, out, err = ork(["trigger", "w"], project, pg_url)
        assert code == 0, err
        run_id = out.strip()
        rec = server.recorder
        first = schedulers.start("host-a")
        wait_for(lambda: "r1" in rec.jobs and rec.jobs["r1"].status_requests >= 1, timeout=60)
        schedulers.start("host-b")
        wait_for(lambda: "serving" in schedulers.log("host-b"), timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        polled = rec.jobs["r1"].status_requests
        wait_for(lambda: "adopted from" in schedulers.log("host-b"), timeout=30)
        wait_for(lambda: rec.jobs["r1"].status_requests > polled + 2, timeout=30)  # tracked again, by host-b
        rec.jobs["r1"].spec["outcome"] = "succeed"
        wait_for(lambda: query(pg_url, "SELECT status FROM runs WHERE id = %s", (run_id,)) == [("success",)], timeout=60)
        assert schedulers.stop("host-b") == 128 + signal.SIGTERM
        assert rec.kickoffs == 1 and list(rec.jobs) == ["r1"] and rec.cancels == []
        assert marks(project) == [f"{run_id} first"]
        assert query(pg_url, "SELECT output FROM tasks WHERE run_id = %s AND name = 'query'", (run_id,)) == [
            ('{"rows": 42, "job": "r1"}',)]
