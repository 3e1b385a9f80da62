"""`kill -9` of a real `ork run` process, then `ork resume`: nothing lost, nothing run twice."""

from __future__ import annotations

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
        assert conn.execute("SELECT status FROM runs").fetchone() == ("stopped",)
    write(chain / "tasks.py", TASKS.replace("time.sleep(seconds)", "time.sleep(0)"))
    resumed = ork_subprocess(["resume"], cwd=chain)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert set(statuses(db).values()) == {"success"}
    assert Counter(log.read_text().split()) == {"first": 1, "slow": 2, "after": 1}
