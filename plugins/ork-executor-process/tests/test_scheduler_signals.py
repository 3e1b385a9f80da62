"""SIGINT, SIGTERM and SIGHUP to a real `ork scheduler` while task trees run: none survives, runs stay resumable.

As for `ork run` (test_process_signals.py), "gone" is read from /proc through the run id in
each task process's environment, and the stopped runs are continued by the next scheduler.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ork_core.proctree import RUN_MARKER, marked_processes, signal_group

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

ORK = [sys.executable, "-m", "ork_core"]


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def wait_until(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)

FLOW = """
    name: trees
    tasks:
      tree:
        executor: process
        command: [sh, -c, 'if [ "$ORK_ATTEMPT" = 1 ]; then sleep 300 & sleep 300; fi; echo done']
      stubborn:
        executor: process
        grace_period: 1
        command: [sh, -c, 'trap "" TERM; if [ "$ORK_ATTEMPT" = 1 ]; then sleep 300 & sleep 300; fi']
      after:
        executor: process
        depends_on: [tree, stubborn]
        command: [echo, after]
    """


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    e["ORK_PLUGINS"] = "process"
    return e


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_signal_to_the_scheduler_ends_every_tree_and_the_next_one_continues(project: Path, sig: int) -> None:
    (project / "ork.yaml").write_text("workflows: [flow.yaml]\n")
    (project / "flow.yaml").write_text(textwrap.dedent(FLOW).lstrip())
    db = project / ".ork" / "ork.db"
    ids = [subprocess.run([*ORK, "trigger", "trees"], cwd=project, env=env(), capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)]
    procs: list[subprocess.Popen[str]] = []
    try:
        first = subprocess.Popen([*ORK, "scheduler", "--poll", "0.1"], cwd=project, env=env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(first)
        # two runs × (sh + 2 sleeps) × 2 tasks
        wait_until(lambda: sum(len(marked_processes({RUN_MARKER: r}) or {}) for r in ids) >= 12, "both runs' trees")
        first.send_signal(sig)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 128 + sig, err
        for run_id in ids:
            assert marked_processes({RUN_MARKER: run_id}) == {}, f"processes of {run_id} survived the scheduler"
        assert sorted(rows(db, "SELECT status FROM runs")) == [("stopped",), ("stopped",)]
        second = subprocess.Popen([*ORK, "scheduler", "--poll", "0.1"], cwd=project, env=env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(second)
        wait_until(lambda: rows(db, "SELECT status FROM runs WHERE status='success'") == [("success",)] * 2,
                   "the next scheduler to finish both runs")
        assert dict(rows(db, "SELECT name, MAX(attempt) FROM tasks GROUP BY name")) == {"tree": 2, "stubborn": 2, "after": 1}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for run_id in ids:
            for _, pgid in (marked_processes({RUN_MARKER: run_id}) or {}).values():
                signal_group(pgid, signal.SIGKILL)
