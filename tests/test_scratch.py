"""The per-process scratch folders in `.ork/tmp/`: whose owner is gone is swept, pid reuse included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ork_core.scratch import SCRATCH, scratch_dir, sweep

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")


def start_time(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()


def test_sweep_keeps_live_owners_and_removes_dead_and_reused_pids(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent = tmp_path / SCRATCH
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        folders = {
            "live": parent / f"{live.pid}-{start_time(live.pid)}",
            "reused": parent / f"{live.pid}-1",  # same pid, another process: its owner is gone
            "dead": parent / f"{dead.pid}-{123}",
            "foreign": parent / "not-ours",
        }
        for folder in folders.values():
            (folder / "sub").mkdir(parents=True)
        mine = scratch_dir(tmp_path)
        assert sorted(sweep(tmp_path)) == sorted([folders["reused"], folders["dead"]])
        assert folders["live"].is_dir() and folders["foreign"].is_dir() and mine.is_dir()
        assert (mine.stat().st_mode & 0o777) == 0o700
    finally:
        live.kill()
        live.wait()
