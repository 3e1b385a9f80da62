"""`ork scheduler` executing the runs people queue: trigger, cancel, retry, signals, adoption."""

from __future__ import annotations

import signal
from pathlib import Path

from orkhelpers import write
from servicehelpers import Schedulers, ork, rows, wait_until

TASKS = """
import os, time
from pathlib import Path

def quick(x: int = 1) -> int:
    return x

def slow() -> str:
    time.sleep(300)
    return "late"

def flaky() -> str:
    if not (Path(__file__).parent / "fixed").exists():
        raise RuntimeError("not fixed yet")
    return "fixed"
"""


def make(project: Path, tasks: str) -> Path:
    write(project / "flows" / "tasks.py", TASKS)
    write(project / "ork.yaml", "workflows: ['flows/*.yaml']\n")
    return write(project / "flows" / "w.yaml", tasks)


def status(db: Path, run_id: str) -> str | None:
    found = rows(db, "SELECT status FROM runs WHERE id=?", (run_id,))
    return found[0][0] if found else None


def test_triggered_runs_are_started_by_the_scheduler(project: Path, schedulers: Schedulers) -> None:
    make(project, """
        name: w
        params: {x: 1}
        tasks:
          a: {file: tasks.py, function: quick, inputs: {x: {param: x}}}
        """)
    db = project / ".ork" / "ork.db"
    first = ork(project, "trigger", "w", "--param", "x=5")
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.strip()
    assert status(db, run_id) == "queued"
    proc = schedulers.start()
    wait_until(lambda: status(db, run_id) == "success", "the triggered run to succeed")
    second = ork(project, "trigger", "flows/w.yaml").stdout.strip()  # by file too, while it runs
    wait_until(lambda: status(db, second) == "success", "the second run")
    assert rows(db, "SELECT output FROM tasks WHERE run_id=?", (run_id,)) == [("5",)]
    code, err = schedulers.stop(proc)
    assert code == 128 + signal.SIGTERM, err
    assert f"run {run_id} w: success" in err


def test_unknown_workflow_names_get_the_known_ones(project: Path) -> None:
    make(project, "name: w\ntasks:\n  a: {file: tasks.py, function: quick}\n")
    result = ork(project, "trigger", "ww")
    assert result.returncode == 2
    assert "no workflow named 'ww'; did you mean w?" in result.stderr or "did you mean 'w'" in result.stderr, result.stderr


def test_cancel_reaches_the_scheduler_that_runs_it(project: Path, schedulers: Schedulers) -> None:
    make(project, "name: w\ntasks:\n  a: {file: tasks.py, function: slow}\n  b: {file: tasks.py, function: quick, depends_on: [a]}\n")
    db = project / ".ork" / "ork.db"
    run_id = ork(project, "trigger", "w").stdout.strip()
    queued = ork(project, "trigger", "w").stdout.strip()
    assert ork(project, "cancel", queued).returncode == 0  # nobody holds it: cancelled at once
    assert status(db, queued) == "cancelled"
    schedulers.start()
    wait_until(lambda: rows(db, "SELECT status FROM tasks WHERE run_id=? AND name='a'", (run_id,)) == [("running",)], "a to run")
    assert ork(project, "cancel", run_id).returncode == 0
    wait_until(lambda: status(db, run_id) == "cancelled", "the cancel")
    again = ork(project, "cancel", run_id)
    assert again.returncode == 2 and "already finished (cancelled)" in again.stderr


def test_retry_puts_failed_tasks_and_downstream_back(project: Path, schedulers: Schedulers) -> None:
    make(project, """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
          b: {file: tasks.py, function: flaky, depends_on: [a]}
          c: {file: tasks.py, function: quick, depends_on: [b]}
        """)
    db = project / ".ork" / "ork.db"
    run_id = ork(project, "trigger", "w").stdout.strip()
    schedulers.start()
    wait_until(lambda: status(db, run_id) == "failed", "the run to fail")
    early = ork(project, "retry", "nope")
    assert early.returncode == 2 and "no run 'nope'" in early.stderr
    (project / "flows" / "fixed").write_text("")
    result = ork(project, "retry", run_id)
    assert result.returncode == 0 and "b, c" in result.stdout, result.stderr
    wait_until(lambda: status(db, run_id) == "success", "the retried run to succeed")
    tasks = dict(rows(db, "SELECT name, attempt FROM tasks WHERE run_id=?", (run_id,)))
    assert tasks == {"a": 1, "b": 2, "c": 1}  # a did not run again; b's failed attempt is in the history
    assert rows(db, "SELECT task, attempt, status FROM attempts WHERE run_id=?", (run_id,)) == [("b", 1, "failed")]
    busy = ork(project, "retry", run_id)
    assert busy.returncode == 2 and "no failed task" in busy.stderr


def test_a_restarted_scheduler_adopts_the_runs_of_a_killed_one(project: Path, schedulers: Schedulers) -> None:
    make(project, """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
          b: {file: tasks.py, function: flaky, depends_on: [a], retries: 50, retry_delay: 0.2}
        """)
    db = project / ".ork" / "ork.db"
    run_id = ork(project, "trigger", "w").stdout.strip()
    first = schedulers.start()
    wait_until(lambda: rows(db, "SELECT attempt FROM tasks WHERE run_id=? AND name='b' AND attempt >= 2", (run_id,)), "b to retry")
    first.send_signal(signal.SIGKILL)
    first.wait()
    (project / "flows" / "fixed").write_text("")
    schedulers.start()
    wait_until(lambda: status(db, run_id) == "success", "the adopted run to succeed")
    assert rows(db, "SELECT attempt FROM tasks WHERE run_id=? AND name='a'", (run_id,)) == [(1,)]


def test_trigger_by_name_looks_in_the_database_the_command_uses(project: Path, tmp_path: Path) -> None:
    from ork_core.storage.base import ScheduleRecord
    from ork_core.storage.sqlite import SQLiteStorage

    path = write(project / "elsewhere" / "w.yaml", "name: w\ntasks:\n  a: {file: tasks.py, function: quick}\n")
    write(project / "elsewhere" / "tasks.py", TASKS)
    url = f"sqlite:///{tmp_path / 'other.db'}"
    storage = SQLiteStorage(url)
    storage.save_schedules("w", [ScheduleRecord("w", "0", str(path), "@daily", "UTC", False, 1, {}, 0.0)])
    storage.close()
    assert ork(project, "trigger", "w").returncode == 2  # not in the project's own database
    result = ork(project, "--db", url, "trigger", "w")
    assert result.returncode == 0, result.stderr
    assert rows(tmp_path / "other.db", "SELECT status FROM runs") == [("queued",)]
