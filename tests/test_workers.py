"""`ork worker`: tasks with a `queue:` run on a worker process, on real processes (SQLite; PostgreSQL where cheap)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from orkhelpers import write
from servicehelpers import ORK, ork, ork_env, rows, wait_until

TASKS = """
import os, time
from pathlib import Path

HERE = Path(__file__).parent

def where() -> dict:
    with open(HERE / "ran", "a") as fh:
        fh.write(f"where {os.getpid()}\\n")
    return {"pid": os.getpid()}

def after(upstream) -> dict:
    return {"pid": os.getpid(), "upstream": upstream["a"]["pid"]}

def mark(n: int) -> int:
    with open(HERE / "ran", "a") as fh:  # O_APPEND: one line per call, whichever process
        fh.write(f"{n} {os.getpid()}\\n")
    return n

def slow(ctx) -> int:
    with open(HERE / "ran", "a") as fh:
        fh.write(f"slow {ctx.attempt} {os.getpid()}\\n")
    if ctx.attempt == 1:
        time.sleep(600)
    return ctx.attempt
"""


class Procs:
    """The `ork worker` and `ork run` processes of one test; their output goes to files; killed at the end."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = self.project.parent / f"proc-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([*ORK, *args], cwd=self.project, env=env or ork_env(), stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
        self.procs.append((proc, log))
        return proc

    def worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return self.start("worker", "--poll", "0.05", *args, env=env)

    def log(self, proc: subprocess.Popen[str]) -> str:
        return next(log for p, log in self.procs if p is proc).read_text()

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def procs(project: Path) -> Iterator[Procs]:
    p = Procs(project)
    yield p
    p.close()


def setup(project: Path, workflow: str, ork_yaml: str = "") -> Path:
    write(project / "tasks.py", TASKS)
    write(project / "ork.yaml", ork_yaml or "{}\n")
    return write(project / "w.yaml", workflow)


def outputs(db: Path, run_id: str | None = None) -> dict[str, object]:
    where = "" if run_id is None else " WHERE run_id = ?"
    return {name: json.loads(out) if out else None
            for name, out in rows(db, f"SELECT name, output FROM tasks{where}", () if run_id is None else (run_id,))}


def test_a_queued_task_runs_on_the_worker_and_its_output_reaches_the_scheduler(project: Path, procs: Procs) -> None:
    setup(project, """
        name: w
        tasks:
          a: {file: tasks.py, function: where, queue: gpu}
          b: {file: tasks.py, function: after, depends_on: [a]}
        """)
    worker = procs.worker("--queue", "gpu")
    run = procs.start("run", "w.yaml", "--quiet")
    assert run.wait(timeout=60) == 0, procs.log(run)
    db = project / ".ork" / "ork.db"
    out = outputs(db)
    assert out["a"] == {"pid": worker.pid}, procs.log(worker)
    assert out["b"] == {"pid": run.pid, "upstream": worker.pid}
    assert rows(db, "SELECT status, worker LIKE ? FROM work_items", (f"%/{worker.pid}/%",)) == [("success", 1)]
    assert rows(db, "SELECT COUNT(*) FROM logs WHERE task = 'a' AND line LIKE 'running on worker%'") == [(1,)]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 128 + signal.SIGTERM
    assert rows(db, "SELECT COUNT(*) FROM workers") == [(0,)]


def test_two_workers_share_a_queue_and_each_task_runs_once(project: Path, procs: Procs) -> None:
    tasks = "\n".join(f"  t{i}: {{file: tasks.py, function: mark, inputs: {{n: {i}}}}}" for i in range(50))
    setup(project, f"name: w\nmax_concurrency: 50\ntasks:\n{tasks}\n", "executors:\n  python: {type: python, queue: batch}\n")
    workers = [procs.worker("--queue", "batch", "--concurrency", "4") for _ in range(2)]
    run = procs.start("run", "w.yaml", "--quiet")
    assert run.wait(timeout=120) == 0, procs.log(run)
    lines = (project / "ran").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == list(range(50))  # each once
    pids = {int(line.split()[1]) for line in lines}
    assert pids <= {w.pid for w in workers} and run.pid not in pids
    db = project / ".ork" / "ork.db"
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT key) FROM work_items WHERE status = 'success'") == [(50, 50)]
    # the 50 attempts started in one pass were enqueued by one call (one `now`), in the workflow's order
    assert rows(db, "SELECT COUNT(DISTINCT created_at) FROM work_items") == [(1,)]
    claimed = [r[0] for r in rows(db, "SELECT task FROM work_items ORDER BY claimed_at, rowid")]
    assert claimed[:4] == ["t0", "t1", "t2", "t3"]  # the first claim took the four oldest


def test_a_killed_workers_attempt_is_retried_by_another_worker_after_its_claim_expires(project: Path, procs: Procs) -> None:
    setup(project, """
        name: w
        tasks:
          s: {file: tasks.py, function: slow, queue: q, retries: 1}
        """)
    db = project / ".ork" / "ork.db"
    first = procs.worker("--queue", "q", "--lease", "1")
    run = procs.start("run", "w.yaml", "--quiet")
    wait_until(lambda: (project / "ran").exists() and "slow 1" in (project / "ran").read_text(), "the first attempt")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    second = procs.worker("--queue", "q", "--lease", "1")
    assert run.wait(timeout=60) == 0, procs.log(run)
    assert time.monotonic() - killed < 30
    assert outputs(db) == {"s": 2}
    assert f"slow 2 {second.pid}" in (project / "ran").read_text()
    (history,) = rows(db, "SELECT attempt, status, error FROM attempts")
    assert history[:2] == (1, "failed") and history[2] == f"worker {os.uname().nodename}/{first.pid} lost: its claim expired"
    assert rows(db, "SELECT attempt, status FROM tasks") == [(2, "success")]
    # the killed worker's record went when the next worker of this host started
    assert [w["pid"] for w in json.loads(ork(project, "workers", "--json").stdout)] == [second.pid]


def test_a_queue_nobody_serves_keeps_the_task_deferred_until_a_worker_comes(project: Path, procs: Procs) -> None:
    setup(project, """
        name: w
        tasks:
          a: {file: tasks.py, function: where, queue: later}
        """)
    db = project / ".ork" / "ork.db"
    run = procs.start("run", "w.yaml", "--quiet")
    wait_until(lambda: rows(db, "SELECT status FROM tasks") == [("deferred",)], "the task deferred")
    jobs = json.loads(ork(project, "jobs", "--json").stdout)
    assert [(j["task"], j["tracker"]) for j in jobs] == [("a", "ork.queue")] and jobs[0]["external_id"].startswith("later/")
    time.sleep(1.0)
    assert run.poll() is None and not (project / "ran").exists()
    worker = procs.worker("--queue", "later", "--queue", "other")
    assert run.wait(timeout=60) == 0, procs.log(run)
    assert outputs(db) == {"a": {"pid": worker.pid}}
    listed = json.loads(ork(project, "workers", "--json").stdout)
    assert [(w["pid"], w["queues"], w["running"]) for w in listed] == [(worker.pid, ["later", "other"], 0)]
    assert listed[0]["host"] == os.uname().nodename and listed[0]["heartbeat_at"] > time.time() - 30


def test_a_stopped_worker_gives_its_attempt_back_and_another_worker_runs_it_at_once(project: Path, procs: Procs) -> None:
    write(project / "once.py", """
import os, time
from pathlib import Path

def slow_once(ctx) -> list:
    here = Path(__file__).parent
    with open(here / "ran", "a") as fh:
        fh.write(f"{ctx.attempt} {os.getpid()}\\n")
    if not (here / "slept").exists():
        (here / "slept").touch()
        time.sleep(600)
    return [ctx.attempt, os.getpid()]
""")
    setup(project, """
        name: w
        tasks:
          s: {file: once.py, function: slow_once, queue: q}
        """)
    db = project / ".ork" / "ork.db"
    first = procs.worker("--queue", "q", "--grace", "1")  # the default 30 s lease: no waiting for it to end
    run = procs.start("run", "w.yaml", "--quiet")
    wait_until(lambda: (project / "slept").exists(), "the first run of the attempt")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 128 + signal.SIGTERM, procs.log(first)
    assert rows(db, "SELECT status, worker FROM work_items") == [("queued", None)]
    second = procs.worker("--queue", "q")
    assert run.wait(timeout=25) == 0, procs.log(run)
    assert outputs(db) == {"s": [1, second.pid]}  # the same attempt, no retry spent (retries: 0)
    assert (project / "ran").read_text() == f"1 {first.pid}\n1 {second.pid}\n"
    assert rows(db, "SELECT COUNT(*) FROM logs WHERE line LIKE ?", (f"%/{first.pid} was stopped (signal 15)%",)) == [(1,)]


def test_a_resumed_run_tracks_the_item_it_enqueued_and_never_enqueues_it_again(project: Path, procs: Procs) -> None:
    write(project / "gate.py", """
import time
from pathlib import Path

def gate() -> str:
    here = Path(__file__).parent
    with open(here / "ran", "a") as fh:
        fh.write("gate\\n")
    while not (here / "go").exists():
        time.sleep(0.05)
    return "opened"
""")
    setup(project, """
        name: w
        tasks:
          g: {file: gate.py, function: gate, queue: q}
        """)
    db = project / ".ork" / "ork.db"
    procs.worker("--queue", "q")
    run = procs.start("run", "w.yaml", "--quiet")
    wait_until(lambda: rows(db, "SELECT status FROM tasks") == [("deferred",)] and (project / "ran").exists(), "the gate")
    run.send_signal(signal.SIGKILL)
    run.wait()
    (project / "go").touch()
    wait_until(lambda: rows(db, "SELECT status FROM work_items") == [("success",)], "the worker to finish")
    (run_id,) = rows(db, "SELECT id FROM runs")[0]
    resumed = ork(project, "resume", run_id, "--quiet")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert outputs(db) == {"g": "opened"}
    assert rows(db, "SELECT COUNT(*) FROM work_items") == [(1,)]
    assert (project / "ran").read_text() == "gate\n"


def test_a_queued_task_times_out_from_its_start_like_any_other(project: Path, procs: Procs) -> None:
    setup(project, """
        name: w
        tasks:
          s: {file: tasks.py, function: slow, queue: q, timeout: 1.5}
        """)
    db = project / ".ork" / "ork.db"
    worker = procs.worker("--queue", "q", "--lease", "1")
    run = procs.start("run", "w.yaml", "--quiet")
    assert run.wait(timeout=30) == 1, procs.log(run)
    ((status, error),) = rows(db, "SELECT status, error FROM tasks")
    assert status == "failed" and error.startswith("timed out after 1.5s"), error
    # the worker's own deadline (from the attempt's start) or the scheduler's cancel, whichever came first
    assert rows(db, "SELECT status FROM work_items") in ([("cancelled",)], [("failed",)])
    assert worker.poll() is None


def test_a_queue_name_is_validated(project: Path) -> None:
    setup(project, """
        name: w
        tasks:
          a: {file: tasks.py, function: where, queue: "no spaces"}
        """)
    result = ork(project, "validate", "w.yaml")
    assert result.returncode != 0 and "tasks.a.queue" in result.stdout + result.stderr
    write(project / "ork.yaml", "executors:\n  python: {type: python, queue: ''}\n")
    result = ork(project, "validate", "w.yaml")
    assert result.returncode != 0 and "executors.python.queue" in result.stdout + result.stderr
    bad = ork(project, "worker", "--queue", "a b")
    assert bad.returncode == 2 and "not a queue name" in bad.stderr


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server (``ORK_TEST_PG``), dropped afterwards."""
    server = os.environ.get("ORK_TEST_PG")
    if not server:
        pytest.skip("ORK_TEST_PG is not set")
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    assert urlsplit(server).hostname == "127.0.0.1"
    name = f"ork_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_on_postgresql_two_workers_share_a_queue_and_each_task_runs_once(project: Path, procs: Procs, pg_db: str) -> None:
    tasks = "\n".join(f"  t{i}: {{file: tasks.py, function: mark, inputs: {{n: {i}}}, queue: batch}}" for i in range(30))
    setup(project, f"name: w\nmax_concurrency: 30\ntasks:\n{tasks}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORK_", "PG"))} | {"ORK_DB": pg_db}
    workers = [procs.worker("--queue", "batch", "--concurrency", "3", env=env) for _ in range(2)]
    listed = wait_until(lambda: len(json.loads(ork(project, "workers", "--json", env=env).stdout)) == 2 or None,
                        "both workers registered")
    assert listed
    run = procs.start("run", "w.yaml", "--quiet", env=env)
    assert run.wait(timeout=120) == 0, procs.log(run)
    lines = (project / "ran").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == list(range(30))
    assert {int(line.split()[1]) for line in lines} <= {w.pid for w in workers}


def test_under_ork_scheduler_a_queued_task_runs_on_a_worker_and_ork_cancel_reaches_it(project: Path, procs: Procs) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "ork.yaml", "workflows: ['w.yaml', 'c.yaml']\n")
    write(project / "w.yaml", """
        name: w
        tasks:
          a: {file: tasks.py, function: where, queue: q}
          b: {file: tasks.py, function: after, depends_on: [a]}
        """)
    write(project / "c.yaml", """
        name: c
        tasks:
          s: {file: tasks.py, function: slow, queue: q}
        """)
    db = project / ".ork" / "ork.db"
    scheduler = procs.start("scheduler", "--poll", "0.1")
    worker = procs.worker("--queue", "q", "--lease", "1")
    assert ork(project, "trigger", "w").returncode == 0
    wait_until(lambda: rows(db, "SELECT status FROM runs WHERE workflow_name='w'") == [("success",)], "the run", timeout=60)
    out = {name: json.loads(o) for name, o in rows(db, "SELECT name, output FROM tasks WHERE name IN ('a', 'b')")}
    assert out["a"] == {"pid": worker.pid} and out["b"]["pid"] == scheduler.pid
    assert ork(project, "trigger", "c").returncode == 0
    wait_until(lambda: rows(db, "SELECT status FROM work_items WHERE task='s'") == [("running",)], "the slow attempt")
    (run_id,) = rows(db, "SELECT id FROM runs WHERE workflow_name='c'")[0]
    assert ork(project, "cancel", run_id).returncode == 0
    wait_until(lambda: rows(db, "SELECT status FROM runs WHERE id=?", (run_id,)) == [("cancelled",)], "the cancel")
    assert rows(db, "SELECT status FROM work_items WHERE task='s'") == [("cancelled",)]
    wait_until(lambda: "claim lost or cancelled" in procs.log(worker), "the worker to stop the attempt", timeout=10)
    for proc in (worker, scheduler):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM


def test_a_scheduler_taking_over_a_run_leaves_alone_what_a_worker_of_its_machine_runs_for_it(
    project: Path, procs: Procs
) -> None:
    """A killed scheduler's successor ends the run's leftover processes on its machine: not a worker's attempt.

    Both find a run's processes by the markers in their environment; an isolated task on a
    worker carries the run's marker too. (Seen as the chaos test's kind of failure, on one host.)
    """
    write(project / "iso.py", """
import os, time
from pathlib import Path

HERE = Path(__file__).parent

def iso(ctx) -> int:
    with open(HERE / "ran", "a") as fh:
        fh.write(f"iso {ctx.attempt} {os.getpid()}\\n")
    while not (HERE / "go").exists():
        time.sleep(0.05)
    return ctx.attempt

def local() -> str:
    while not (HERE / "go").exists():
        time.sleep(0.05)
    return "local"
""")
    write(project / "ork.yaml", "workflows: ['w.yaml']\n")
    write(project / "w.yaml", """
        name: w
        tasks:
          iso: {file: iso.py, function: iso, queue: q, isolation: process}
          local: {file: iso.py, function: local}
        """)
    db = project / ".ork" / "ork.db"
    first = procs.start("scheduler", "--poll", "0.1")
    procs.worker("--queue", "q")
    assert ork(project, "trigger", "w").returncode == 0
    wait_until(lambda: (project / "ran").exists() and rows(db, "SELECT status FROM tasks WHERE name = 'local'")
               == [("running",)], "the isolated attempt on the worker and the local task")
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = procs.start("scheduler", "--poll", "0.1")  # this host: the dead pid is seen, the run taken at once
    wait_until(lambda: "resumed" in procs.log(second), "the takeover")
    time.sleep(0.5)  # what it ends, it has ended
    (project / "go").touch()
    wait_until(lambda: rows(db, "SELECT status FROM runs") in ([("success",)], [("failed",)]), "the run")
    assert rows(db, "SELECT name, status, attempt, error FROM tasks ORDER BY name") == [
        ("iso", "success", 1, None), ("local", "success", 2, None)]
    assert len((project / "ran").read_text().splitlines()) == 1


def test_a_worker_restarted_on_its_machine_ends_what_its_killed_predecessor_left_running(
    project: Path, procs: Procs
) -> None:
    """kill -9 cannot end a worker's `isolation: process` children: the next worker of the host does.

    Else the lost attempt would run on beside its retry.
    """
    write(project / "iso.py", """
import os, time
from pathlib import Path

def forever(ctx) -> int:
    with open(Path(__file__).parent / "ran", "a") as fh:
        fh.write(f"{ctx.attempt} {os.getpid()}\\n")
    time.sleep(600 if ctx.attempt == 1 else 0)
    return ctx.attempt
""")
    setup(project, """
        name: w
        tasks:
          s: {file: iso.py, function: forever, queue: q, isolation: process, retries: 1}
        """)
    first = procs.worker("--queue", "q", "--lease", "1")
    run = procs.start("run", "w.yaml", "--quiet")
    wait_until(lambda: (project / "ran").exists() and (project / "ran").read_text(), "the first attempt")
    child = int((project / "ran").read_text().split()[1])
    try:
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(0.3)
        os.kill(child, 0)  # the child runs on
        second = procs.worker("--queue", "q", "--lease", "1")
        assert run.wait(timeout=60) == 0, procs.log(run)
        wait_until(lambda: not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z",
                   "the orphan to end", timeout=15)
        assert "left running by a killed worker" in procs.log(second)
        assert [line.split()[0] for line in (project / "ran").read_text().splitlines()] == ["1", "2"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # (what this test's worker started)
