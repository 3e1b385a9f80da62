"""Running the real `ork` command against a PostgreSQL URL, as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def ork_process(args: list[str], cwd: Path, db: str | None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`ork` with ``ORK_DB`` set (None: not set); installed plugins load (this one among them) as for a user."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ORK_", "PG"))}, **(env or {})}
    if db is not None:
        env["ORK_DB"] = db
    return subprocess.Popen(
        [sys.executable, "-m", "ork_core", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def ork(
    args: list[str], cwd: Path, db: str | None, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = ork_process(args, cwd, db, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")
