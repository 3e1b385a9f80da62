"""Owning a task's whole process tree: start it in its own session, end all of it.

A task's command runs as the leader of a new session and process group, so everything it
starts (shells, grandchildren in the background) shares the group id. Ending a task is
SIGTERM to the group, a grace period, SIGKILL to the group, then a check through /proc that
nothing of the group is left. The group id is committed to storage while the task runs so a
restarted ork can end what a killed ork left behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

DEFAULT_GRACE = 5.0


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) whose process group is `pgid`, read from /proc."""
    members: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: fall back to asking the kernel about the group
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ... ; comm may contain spaces or parentheses
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) >= 3 and rest[0] != "Z" and int(rest[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def end_group(pgid: int, grace: float = DEFAULT_GRACE, poll: float = 0.02) -> bool:
    """SIGTERM the group, wait up to `grace` seconds, SIGKILL what is left; True if none remain.

    Blocking: call it from a worker thread, or with a short grace.
    """
    if not group_members(pgid):
        return True
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(poll)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(poll)
    return not group_members(pgid)
