"""``kill -9`` of ``ork run`` while a task's tree runs, then ``ork resume``: no orphan survives.

And the memory check: a task printing 200 MB leaves ork's own memory flat. Both run ork as
a real child process, the way a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ork_core.proctree import group_members, signal_group

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

ORK = [sys.executable, "-m", "ork_core"]


def ork_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}


def write_project(folder: Path, workflow: str) -> Path:
    (folder / "ork.yaml").write_text("executors: {}\n")
    path = folder / "flow.yaml"
    path.write_text(textwrap.dedent(workflow).lstrip())
    return path


def task_row(db: Path, task: str) -> tuple[str, int | None] | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT status, pgid FROM tasks WHERE name=?", (task,)).fetchone()
    except sqlite3.Error:
        return None
    return (row[0], row[1]) if row else None


def test_kill_9_then_resume_ends_the_orphans_first(project: Path) -> None:
    flow = write_project(
        project,
        """
        name: crashy
        tasks:
          long:
            executor: process
            # the first attempt starts a tree that would run for five minutes; the second finishes
            command: [sh, -c, 'if [ "$ORK_ATTEMPT" = 1 ]; then echo $$ > pgid; sleep 300 & sleep 300; fi; echo second']
          after:
            executor: process
            depends_on: [long]
            command: [echo, after]
        """,
    )
    db = project / ".ork" / "ork.db"
    ork = subprocess.Popen([*ORK, "run", "-q", str(flow)], cwd=project, env=ork_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pgid = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = task_row(db, "long")
            if row and row[0] == "running" and row[1] and (project / "pgid").exists() and len(group_members(row[1])) >= 2:
                pgid = row[1]
                break
            assert ork.poll() is None, f"ork ended early: {ork.communicate()}"
            time.sleep(0.05)
        assert pgid is not None, "the task never got running with its group recorded"
        assert int((project / "pgid").read_text()) == pgid

        os.kill(ork.pid, signal.SIGKILL)
        ork.communicate(timeout=30)
        orphans = group_members(pgid)
        assert len(orphans) >= 2, "the task's processes should outlive a killed ork (they are orphans now)"

        resumed = subprocess.run([*ORK, "resume", "-q"], cwd=project, env=ork_env(), capture_output=True,
                                 text=True, timeout=120, check=False)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert group_members(pgid) == [], f"orphans of group {pgid} survived ork resume"
        assert all(_gone(pid) for pid in orphans)

        run_id = resumed.stdout.split()[1]
        shown = subprocess.run([*ORK, "runs", "show", run_id, "--json"], cwd=project, env=ork_env(),
                               capture_output=True, text=True, timeout=60, check=False)
        data = json.loads(shown.stdout)
        assert data["status"] == "success"
        tasks = {t["name"]: t for t in data["tasks"]}
        assert tasks["long"]["status"] == "success" and tasks["long"]["attempts"] == 2
        assert tasks["after"]["status"] == "success"
        assert task_row(db, "long") == ("success", None)
    finally:
        if ork.poll() is None:
            ork.kill()
            ork.communicate()
        if pgid is not None:
            signal_group(pgid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_kill_9_before_the_group_is_committed_still_leaves_no_orphan(project: Path) -> None:
    """ork dies within milliseconds of the start: resume finds the tree by the run id in its environment.

    One of the task's processes even left the session with ``setsid`` (so no group or session
    id leads to it); it carries the run id all the same.
    """
    flow = write_project(
        project,
        """
        name: early
        tasks:
          long:
            executor: process
            command: [sh, -c, 'if [ "$ORK_ATTEMPT" = 1 ]; then setsid sh -c "echo \\$\\$ > escaped; exec sleep 300" & echo $$ > pgid; exec sleep 300; fi']
        """,
    )
    ork = subprocess.Popen([*ORK, "run", "-q", str(flow)], cwd=project, env=ork_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ((project / "pgid").exists() and (project / "escaped").exists()):
            assert ork.poll() is None, f"ork ended early: {ork.communicate()}"
            time.sleep(0.002)
        os.kill(ork.pid, signal.SIGKILL)
        ork.communicate(timeout=30)
        pids = [int((project / name).read_text()) for name in ("pgid", "escaped")]
        assert all(not _gone(pid) for pid in pids), "the task's processes should outlive a killed ork"
        assert os.getsid(pids[1]) == pids[1] != pids[0], "the escaped process should lead its own session"

        resumed = subprocess.run([*ORK, "resume", "-q"], cwd=project, env=ork_env(), capture_output=True,
                                 text=True, timeout=120, check=False)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert [pid for pid in pids if not _gone(pid)] == [], "processes of the killed run survived ork resume"
    finally:
        if ork.poll() is None:
            ork.kill()
            ork.communicate()
        for pid in pids:
            signal_group(pid, signal.SIGKILL)


def _peak_rss_kb(argv: list[str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.Popen(argv, cwd=cwd, env=ork_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    assert proc.returncode == 0, stderr
    return usage.ru_maxrss, stderr


def test_200_mb_of_stdout_keeps_ork_memory_flat(project: Path) -> None:
    # 200 MB in ~6.9 million lines: the file gets every byte, the log keeps the first 4 MiB
    big = "yes 'a line of output, 29 b' | head -c 200000000"
    flow = write_project(
        project,
        f"""
        name: loud
        tasks:
          quiet:
            executor: process
            shell: true
            command: "echo small"
          loud:
            executor: process
            shell: true
            command: "{big}"
        """,
    )
    small_flow = project / "small.yaml"
    small_flow.write_text(flow.read_text().replace(big, "echo small").replace("loud", "small"))
    baseline, _ = _peak_rss_kb([*ORK, "run", "-q", str(small_flow)], project)
    loud, _ = _peak_rss_kb([*ORK, "run", "-q", str(flow)], project)
    grown_mb = (loud - baseline) / 1024
    print(f"peak RSS: small run {baseline / 1024:.1f} MB, 200 MB run {loud / 1024:.1f} MB")
    assert grown_mb < 8, f"ork's peak memory grew by {grown_mb:.1f} MB for a 200 MB output"
    run_dir = next((project / ".ork" / "artifacts").glob("*/loud/1"))
    assert (run_dir / "stdout.log").stat().st_size == 200_000_000


def test_the_scratch_folder_of_a_killed_ork_is_removed_by_the_next_ork(project: Path) -> None:
    """``$ORK_OUTPUT`` lives in ``.ork/tmp/<pid>-<start>/``: no temp folder leaks per killed ork."""
    flow = write_project(
        project,
        """
        name: leaky
        tasks:
          wait:
            executor: process
            command: [sh, -c, 'echo $$ > pgid; while [ ! -f go ]; do sleep 0.05; done; echo "{\\"ok\\": 1}" > "$ORK_OUTPUT"']
        """,
    )
    scratch = project / ".ork" / "tmp"
    ork = subprocess.Popen([*ORK, "run", "-q", str(flow)], cwd=project, env=ork_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (project / "pgid").exists():
            assert time.monotonic() < deadline and ork.poll() is None, "the task never started"
            time.sleep(0.05)
        (mine,) = list(scratch.iterdir())
        assert mine.name.startswith(f"{ork.pid}-")
        assert (mine.stat().st_mode & 0o777) == 0o700 and (scratch.stat().st_mode & 0o777) == 0o700
        os.kill(ork.pid, signal.SIGKILL)
        ork.communicate(timeout=30)
        assert mine.is_dir(), "a killed ork cannot remove its own folder"

        listed = subprocess.run([*ORK, "runs"], cwd=project, env=ork_env(), capture_output=True, text=True,
                                timeout=60, check=False)
        assert listed.returncode == 0, listed.stderr
        assert not mine.exists(), "the next ork command should remove the dead ork's scratch folder"

        (project / "go").write_text("")
        resumed = subprocess.run([*ORK, "resume", "-q"], cwd=project, env=ork_env(), capture_output=True,
                                 text=True, timeout=120, check=False)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert list(scratch.iterdir()) == [], "a clean exit removes the process's own scratch folder"
    finally:
        if ork.poll() is None:
            ork.kill()
            ork.communicate()
