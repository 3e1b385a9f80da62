"""SIGINT, SIGTERM and SIGHUP to a real ``ork run``: stop, end the task trees, stay resumable.

The tasks start in sessions of their own, so a signal to ork never reaches them; ork must end
them itself. Every check of "gone" reads /proc (the run id is in each task process's
environment), and every run is resumed to success afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ork_core.proctree import RUN_MARKER, marked_processes, signal_group

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

ORK = [sys.executable, "-m", "ork_core"]

TASKS = '''
import os, time

def forks(ctx) -> str:
    """Attempt 1 forks a grandchild and both sleep; later attempts return at once."""
    if ctx.attempt == 1:
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
        time.sleep(300)
    return "forked"
'''


def ork_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    env["ORK_PLUGINS"] = "process"
    return env


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def wait_until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def runs(project: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """ork processes a test starts; afterwards they and every process of their runs are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    for (run_id,) in rows(project / ".ork" / "ork.db", "SELECT id FROM runs"):
        for _, pgid in (marked_processes({RUN_MARKER: str(run_id)}) or {}).values():
            signal_group(pgid, signal.SIGKILL)


def start(project: Path, workflow: str, runs: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], str]:
    (project / "ork.yaml").write_text("executors: {}\n")
    (project / "tasks.py").write_text(TASKS)
    (project / "flow.yaml").write_text(textwrap.dedent(workflow).lstrip())
    proc = subprocess.Popen([*ORK, "run", "-q", "flow.yaml"], cwd=project, env=ork_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs.append(proc)
    db = project / ".ork" / "ork.db"
    wait_until(lambda: rows(db, "SELECT id FROM runs") or proc.poll() is not None, "the run to be created")
    assert proc.poll() is None, proc.communicate()
    return proc, str(rows(db, "SELECT id FROM runs")[0][0])


def resume(project: Path) -> subprocess.CompletedProcess[str]:
    # no --force: the recorded pid of the stopped ork must not make resume refuse
    return subprocess.run([*ORK, "resume", "-q"], cwd=project, env=ork_env(), capture_output=True, text=True,
                          timeout=120, check=False)


MIXED = """
    name: stoppable
    tasks:
      tree:
        executor: process
        command: [sh, -c, 'if [ "$ORK_ATTEMPT" = 1 ]; then sleep 300 & sleep 300; fi; echo done']
      isolated:
        file: tasks.py
        function: forks
        isolation: process
      after:
        executor: process
        depends_on: [tree, isolated]
        command: [echo, after]
    """


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_the_trees_and_leaves_the_run_resumable(
    project: Path, runs: list[subprocess.Popen[str]], sig: int
) -> None:
    proc, run_id = start(project, MIXED, runs)
    markers = {RUN_MARKER: run_id}
    # sh + 2 sleeps, and the isolated child + its fork
    wait_until(lambda: len(marked_processes(markers) or {}) >= 5, "both trees with their grandchildren")
    db = project / ".ork" / "ork.db"
    wait_until(lambda: len(rows(db, "SELECT 1 FROM tasks WHERE pgid IS NOT NULL")) == 2, "both groups committed")

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 128 + sig, out + err
    assert f"ork resume {run_id}" in err
    assert marked_processes(markers) == {}, "processes of the stopped run survived ork"
    assert rows(db, "SELECT status FROM runs") == [("stopped",)]
    assert dict(rows(db, "SELECT name, status FROM tasks")) == {"tree": "running", "isolated": "running", "after": "pending"}

    resumed = resume(project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert rows(db, "SELECT status FROM runs") == [("success",)]
    assert dict(rows(db, "SELECT name, attempt FROM tasks")) == {"tree": 2, "isolated": 2, "after": 1}


def test_a_tree_that_ignores_sigterm_is_killed_after_the_grace(project: Path, runs: list[subprocess.Popen[str]]) -> None:
    proc, run_id = start(project, """
        name: stubborn
        tasks:
          stubborn:
            executor: process
            grace_period: 1
            command: [sh, -c, 'trap "" TERM; sleep 300 & sleep 300']
        """, runs)
    markers = {RUN_MARKER: run_id}
    wait_until(lambda: len(marked_processes(markers) or {}) >= 3, "the tree")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    assert marked_processes(markers) == {}


def test_a_second_signal_stops_without_waiting_for_the_grace(project: Path, runs: list[subprocess.Popen[str]]) -> None:
    proc, run_id = start(project, """
        name: stubborn
        tasks:
          stubborn:
            executor: process
            grace_period: 600
            command: [sh, -c, 'trap "" TERM; if [ "$ORK_ATTEMPT" = 1 ]; then sleep 300 & sleep 300; fi']
        """, runs)
    markers = {RUN_MARKER: run_id}
    wait_until(lambda: len(marked_processes(markers) or {}) >= 3, "the tree")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None, "the tree ignores SIGTERM: the first signal waits for the grace"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)  # would take the 600 s grace without the second signal
    assert proc.returncode == 130, out + err
    assert marked_processes(markers) == {}
    resumed = resume(project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    db = project / ".ork" / "ork.db"
    assert rows(db, "SELECT status FROM runs") == [("success",)]


def test_sigterm_while_resume_ends_a_killed_orks_leftovers(project: Path, runs: list[subprocess.Popen[str]]) -> None:
    """Before its loop starts, `ork resume` ends what a killed ork left: a signal then still ends it all."""
    (project / "stubborn.py").write_text(
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: pathlib.Path('termed').touch())  # survives SIGTERM\n"
        "time.sleep(300)\n"
    )
    proc, run_id = start(project, f"""
        name: leftovers
        tasks:
          stubborn:
            executor: process
            command: [sh, -c, 'if [ "$ORK_ATTEMPT" = 1 ]; then exec {sys.executable} stubborn.py; fi']
        """, runs)
    markers = {RUN_MARKER: run_id}
    db = project / ".ork" / "ork.db"
    wait_until(lambda: marked_processes(markers) and rows(db, "SELECT pgid FROM tasks")[0][0], "the task's group committed")
    proc.kill()
    proc.communicate()
    assert marked_processes(markers), "the task outlives a killed ork"

    resuming = subprocess.Popen([*ORK, "resume", "-q"], cwd=project, env=ork_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs.append(resuming)
    wait_until(lambda: (project / "termed").exists(), "resume to send the leftover SIGTERM")  # it now waits the grace
    resuming.send_signal(signal.SIGTERM)
    out, err = resuming.communicate(timeout=60)
    assert resuming.returncode == 143, out + err
    assert f"ork resume {run_id}" in err
    assert marked_processes(markers) == {}, "the leftover survived a stopped resume"

    resumed = resume(project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert rows(db, "SELECT status FROM runs") == [("success",)]
