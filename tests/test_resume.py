"""`kill -9` of a real `ork run` process, then `ork resume`: nothing lost, nothing run twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from orkhelpers import ork_subprocess, write
from ork_core.storage.sqlite import SQLiteStorage

TASKS = '''
import os, time
from pathlib import Path

def step(name: str, log: str, seconds: float = 0.0) -> str:
    with open(log, "a") as fh:
        fh.write(name + "\\n")
        fh.flush()
        os.fsync(fh.fileno())
    time.sleep(seconds)
    return name
'''


def statuses(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("SELECT name, status FROM tasks"))
    except sqlite3.OperationalError:  # the schema is being created
        return {}


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def kill(proc) -> None:  # type: ignore[no-untyped-def]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def chain(project: Path) -> Path:
    write(project / "tasks.py", TASKS)
    write(project / "ork.yaml", "max_concurrency: 2\n")
    return project


def test_resume_after_sigkill_runs_nothing_twice(chain: Path) -> None:
    log = chain / "executions.log"
    write(chain / "wf.yaml", f"""
        name: crashy
        tasks:
          a: {{file: tasks.py, function: step, inputs: {{name: a, log: "{log}"}}}}
          b:
            file: tasks.py
            function: step
            depends_on: [a]
            inputs: {{name: b, log: "{log}", seconds: 30}}
          c:
            file: tasks.py
            function: step
            depends_on: [b]
            inputs: {{name: c, log: "{log}"}}
        """)
    proc = ork_subprocess(["run", "wf.yaml"], cwd=chain)
    wait_for(lambda: log.exists() and "b" in log.read_text().split())
    db = chain / ".ork" / "ork.db"
    wait_for(lambda: statuses(db).get("b") == "running")
    kill(proc)
    assert statuses(db) == {"a": "success", "b": "running", "c": "pending"}

    # b sleeps 30 s; make the resumed attempt quick by editing nothing but the data it reads:
    # the resumed run uses the stored workflow snapshot, so we shorten the sleep via the task file.
    write(chain / "tasks.py", TASKS.replace("time.sleep(seconds)", "time.sleep(0)"))
    resumed = ork_subprocess(["resume"], cwd=chain)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert "resumed" in out
    assert Counter(log.read_text().split()) == {"a": 1, "b": 2, "c": 1}
    assert statuses(db) == {"a": "success", "b": "success", "c": "success"}
    storage = SQLiteStorage(f"sqlite:///{db}")
    (run,) = storage.list_runs()
    attempts = [(a.task, a.attempt, a.try_number, a.status, a.error) for a in storage.attempts(run.id)]
    run_status = run.status
    storage.close()
    assert ("b", 1, 1, "failed", "ork stopped while this attempt was running") in attempts
    assert ("b", 2, 1, "success", None) in attempts
    assert run_status == "success"


@pytest.mark.parametrize("kill_after", [0.15, 0.4, 0.8])
def test_kill_at_any_moment_loses_nothing(chain: Path, kill_after: float) -> None:
    log = chain / "executions.log"
    tasks = "".join(
        f"  t{i}: {{file: tasks.py, function: step, inputs: {{name: t{i}, log: '{log}', seconds: 0.04}}"
        + (f", depends_on: [t{i - 1}]" if i else "")
        + "}\n"
        for i in range(60)
    )
    write(chain / "wf.yaml", "name: long_chain\ntasks:\n" + tasks)
    proc = ork_subprocess(["run", "wf.yaml"], cwd=chain)
    wait_for(lambda: log.exists())
    time.sleep(kill_after)
    kill(proc)
    db = chain / ".ork" / "ork.db"
    before = statuses(db)
    done_before = {t for t, s in before.items() if s == "success"}
    resumed = ork_subprocess(["resume"], cwd=chain)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    counts = Counter(log.read_text().split())
    assert set(statuses(db).values()) == {"success"}
    assert all(counts[t] == 1 for t in done_before), {t: counts[t] for t in done_before if counts[t] != 1}
    assert all(1 <= counts[f"t{i}"] <= 2 for i in range(60))


def test_resume_refuses_a_finished_run_and_a_live_process(chain: Path) -> None:
    write(chain / "wf.yaml", f"name: w\ntasks:\n  a: {{file: tasks.py, function: step, inputs: {{name: a, log: '{chain / 'l'}', seconds: 5}}}}\n")
    proc = ork_subprocess(["run", "wf.yaml"], cwd=chain)
    db = chain / ".ork" / "ork.db"
    wait_for(lambda: db.exists() and statuses(db).get("a") == "running")
    busy = ork_subprocess(["resume"], cwd=chain)
    _, err = busy.communicate(timeout=30)
    assert busy.returncode == 2 and "is still being executed by process" in err
    kill(proc)
    runs = ork_subprocess(["runs", "--json"], cwd=chain)
    out, _ = runs.communicate(timeout=30)
    run_id = json.loads(out)[0]["id"]
    write(chain / "tasks.py", TASKS.replace("time.sleep(seconds)", "time.sleep(0)"))
    first = ork_subprocess(["resume", run_id], cwd=chain)
    assert first.wait(timeout=60) == 0
    again = ork_subprocess(["resume", run_id], cwd=chain)
    _, err = again.communicate(timeout=30)
    assert again.returncode == 2 and "already finished (success)" in err
    assert os.path.exists(db)


def test_ctrl_c_stops_the_run_resumably(chain: Path) -> None:
    log = chain / "executions.log"
    write(chain / "wf.yaml", f"""
        name: interrupted
        tasks:
          first: {{file: tasks.py, function: step, inputs: {{name: first, log: "{log}"}}}}
          slow: {{file: tasks.py, function: step, depends_on: [first], inputs: {{name: slow, log: "{log}", seconds: 30}}}}
          after: {{file: tasks.py, function: step, depends_on: [slow], inputs: {{name: after, log: "{log}"}}}}
        """)
    proc = ork_subprocess(["run", "wf.yaml"], cwd=chain)
    db = chain / ".ork" / "ork.db"
    wait_for(lambda: statuses(db).get("slow") == "running")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)  # the thread sleeping 30 s is not waited for
    assert proc.returncode == 130, err
    assert "the run can continue with: ork resume" in err
    assert statuses(db) == {"first": "success", "slow": "running", "after": "pending"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, owner FROM runs").fetchone() == ("stopped", None)
    write(chain / "tasks.py", TASKS.replace("time.sleep(seconds)", "time.sleep(0)"))
    resumed = ork_subprocess(["resume"], cwd=chain)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert set(statuses(db).values()) == {"success"}
    assert Counter(log.read_text().split()) == {"first": 1, "slow": 2, "after": 1}


STUBBORN = '''
import os, signal, time

def step(log: str) -> int:
    """Appends its pid; the first execution ignores SIGTERM and sleeps, so ending it takes the grace."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()}\\n".encode())
    os.close(fd)
    with open(log) as fh:
        executions = len(fh.read().split())
    if executions == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
    else:
        time.sleep(3)  # the winner is still executing while the loser starts, however slow the machine
    return executions
'''


def test_two_resumes_at_once_execute_the_run_once(project: Path) -> None:
    """Two `ork resume` of a run left by kill -9: one claims it and executes it, the other refuses.

    The leftover task ignores SIGTERM, so the winner spends seconds ending it before it starts
    anything: without an atomic claim both resumes pass the liveness check and both execute.
    """
    log = project / "executions.log"
    write(project / "tasks.py", STUBBORN)
    write(project / "wf.yaml", f"""
        name: stubborn
        tasks:
          a: {{file: tasks.py, function: step, isolation: process, inputs: {{log: "{log}"}}}}
        """)
    db = project / ".ork" / "ork.db"
    procs = [ork_subprocess(["run", "wf.yaml"], cwd=project)]
    try:
        wait_for(lambda: log.exists() and len(log.read_text().split()) == 1 and statuses(db).get("a") == "running")
        kill(procs[0])
        with sqlite3.connect(db) as conn:
            (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
        procs += [ork_subprocess(["resume", run_id], cwd=project) for _ in range(2)]
        results = [(p.pid, p.wait(timeout=90), p.communicate()[1]) for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for pid in (log.read_text().split() if log.exists() else []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    codes = sorted(code for _, code, _ in results)
    assert codes == [0, 2], results
    (winner,) = [pid for pid, code, _ in results if code == 0]
    (loser_err,) = [err for _, code, err in results if code == 2]
    assert f"run {run_id}" in loser_err and f"process {winner} on host" in loser_err, loser_err
    assert "Traceback" not in loser_err and loser_err.count("error:") == 1
    assert len(log.read_text().split()) == 2  # the first attempt, then the winner's
    assert statuses(db) == {"a": "success"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, owner FROM runs").fetchone() == ("success", None)


def test_a_reused_pid_is_not_a_live_owner(chain: Path) -> None:
    """The owner names the process's start time too: a live process with the owner's pid is another one."""
    import socket

    from ork_core.ownership import Owner

    me = Owner.current()
    assert me.alive() and Owner.parse(me.token) == me
    assert not Owner(me.host, me.pid, "someboot:1").alive()
    assert Owner("another-host.example", 1, "").alive()  # cannot be seen from here: assumed alive
    assert Owner("", me.pid, "").alive()  # an older ork's run: the pid alone decides

    log = chain / "l"
    write(chain / "wf.yaml", f"name: w\ntasks:\n  a: {{file: tasks.py, function: step, inputs: {{name: a, log: '{log}', seconds: 30}}}}\n")
    proc = ork_subprocess(["run", "wf.yaml"], cwd=chain)
    db = chain / ".ork" / "ork.db"
    wait_for(lambda: statuses(db).get("a") == "running")
    kill(proc)
    # the pid of the dead owner now belongs to a live process (this one), started at another time
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET owner=?", (f"{socket.gethostname()}/{os.getpid()}/someboot:1",))
    write(chain / "tasks.py", TASKS.replace("time.sleep(seconds)", "time.sleep(0)"))
    resumed = ork_subprocess(["resume"], cwd=chain)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert statuses(db) == {"a": "success"}


FLAKY = '''
from pathlib import Path

def once_then_ok(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return "ok"
'''


def test_resume_during_a_retry_delay_waits_for_the_rest_of_it(project: Path) -> None:
    """A task waiting for its retry when ork was killed is retried at next_try_at, not at once."""
    write(project / "flaky.py", FLAKY)
    write(project / "wf.yaml", f"""
        name: patient
        tasks:
          t:
            file: flaky.py
            function: once_then_ok
            inputs: {{marker: "{project / 'marker'}"}}
            retries: 1
            retry_delay: 6
        """)
    proc = ork_subprocess(["run", "wf.yaml"], cwd=project)
    db = project / ".ork" / "ork.db"
    wait_for(lambda: statuses(db).get("t") == "retrying")
    kill(proc)
    storage = SQLiteStorage(f"sqlite:///{db}")
    (run,) = storage.list_runs()
    due = storage.get_run(run.id).tasks["t"].next_try_at
    storage.close()
    assert due is not None

    resumed = ork_subprocess(["resume"], cwd=project)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    storage = SQLiteStorage(f"sqlite:///{db}")
    record = storage.get_run(run.id).tasks["t"]
    storage.close()
    assert record.status == "success" and record.attempt == 2 and record.try_number == 2
    assert record.started_at is not None and record.started_at >= due


def test_resume_without_an_id_takes_the_newest_interrupted_run_not_a_queued_one(chain: Path) -> None:
    log = chain / "l"
    write(chain / "wf.yaml", f"name: w\ntasks:\n  a: {{file: tasks.py, function: step, inputs: {{name: a, log: '{log}', seconds: 5}}}}\n")
    queued_only = ork_subprocess(["trigger", "wf.yaml"], cwd=chain)
    queued_id, _ = queued_only.communicate(timeout=30)
    nothing = ork_subprocess(["resume"], cwd=chain)
    _, err = nothing.communicate(timeout=30)
    assert nothing.returncode == 1 and "1 run(s) are queued for `ork scheduler`" in err and queued_id.strip() in err
    proc = ork_subprocess(["run", "wf.yaml"], cwd=chain)
    db = chain / ".ork" / "ork.db"
    wait_for(lambda: "running" in Counter(status for _, status in _task_rows(db)))
    kill(proc)
    ork_subprocess(["trigger", "wf.yaml"], cwd=chain).communicate(timeout=30)  # newer, and queued
    write(chain / "tasks.py", TASKS.replace("time.sleep(seconds)", "time.sleep(0)"))
    resumed = ork_subprocess(["resume", "--quiet"], cwd=chain)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    with sqlite3.connect(db) as conn:
        by_status = Counter(status for (status,) in conn.execute("SELECT status FROM runs"))
    assert by_status == Counter({"success": 1, "queued": 2})


def _task_rows(db: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT name, status FROM tasks").fetchall()
