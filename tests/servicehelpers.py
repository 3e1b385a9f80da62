"""Running a real `ork scheduler` in tests: start it, read its database, stop it by its pid."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


ORK = [sys.executable, "-m", "ork_core"]


def ork_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    env["ORK_DISABLE_PLUGINS"] = "1"
    env.update(extra)
    return env


def rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """What the database says now (empty while it does not exist yet)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return []
        raise


def wait_until(check: Callable[[], object], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def ork(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ORK, *args], cwd=project, env=env or ork_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


class Schedulers:
    """`ork scheduler` processes of one test; whatever is left is killed at the end.

    Their output goes to files, never to a pipe nobody reads: a scheduler that logs a line per
    run would block on a full pipe after a few hundred runs.
    """

    def __init__(self, project: Path) -> None:
        self.project = project
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: dict[int, Path] = {}

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = self.project.parent / f"scheduler-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([*ORK, "scheduler", "--poll", "0.1", *args], cwd=self.project,
                                    env=env or ork_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        return self.logs[proc.pid].read_text()

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Signal it, wait for it to end; its exit code and everything it logged."""
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
        return proc.returncode, self.log(proc)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
