"""Runs ork's real CLI entry in-process on many inputs, for the bad-input corpus test.

One child process handles many invocations (a process per file would take minutes on a small
machine). Usage: ``python badinput_driver.py JOBS.json`` where the file holds a list of
``{"cwd": …, "args": […]}``; prints one JSON line per job: exit code, stderr, the type of any
exception that escaped the CLI (what a user would see as a traceback), and seconds taken. A
job that takes longer than its deadline is stopped by SIGALRM and reported as ``Hang``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType

from click.testing import CliRunner

DEADLINE_S = 5


class Hang(Exception):
    """Raised in the CLI by the alarm when a job outlives its deadline."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no answer within {DEADLINE_S} s")


def main() -> None:
    from ork_core.cli import main as ork

    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    signal.signal(signal.SIGALRM, _alarm)
    for job in jobs:
        os.chdir(job["cwd"])
        started = time.monotonic()
        signal.alarm(DEADLINE_S)
        try:
            result = CliRunner().invoke(ork, job["args"])
        finally:
            signal.alarm(0)
        exc = result.exception
        escaped = None if exc is None or isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        print(json.dumps({"cwd": job["cwd"], "args": job["args"], "code": result.exit_code, "err": result.stderr,
                          "escaped": escaped, "seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    main()
