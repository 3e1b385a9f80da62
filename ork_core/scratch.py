"""One private scratch folder per ork process, under the project's state folder.

Executors need files that live only while ork runs (the process executor's ``$ORK_OUTPUT``
files). A folder from `tempfile.mkdtemp` leaks each time ork is killed, in a place nobody
looks; this one is ``.ork/tmp/<pid>-<start time>/`` beside ``ork.db``, created with mode 0700
on first use, removed when the process exits normally, and removed by the next ork that
starts in the project once its owner is dead. The start time (from ``/proc/<pid>/stat``)
is in the name so a pid the kernel has given to another process does not keep a dead
ork's folder alive.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
from pathlib import Path

from ork_core.storage import DEFAULT_DB

SCRATCH = DEFAULT_DB.parent / "tmp"
"""The parent of every process's scratch folder, relative to the project folder."""


@functools.cache
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("0" where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return "0"
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()


def _name(pid: int) -> str:
    return f"{pid}-{_start_time(pid)}"


def _owner_alive(name: str) -> bool:
    """Is the process that created the folder `name` still the one running with that pid?"""
    pid_text, _, started = name.partition("-")
    if not pid_text.isdigit() or not started:
        return True  # not ours: leave it alone
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    if Path("/proc").is_dir():
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            return False
        rest = stat[stat.rfind(b")") + 2 :].split()
        return rest[0] != b"Z" and rest[19].decode() == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_registered: set[Path] = set()
"""Folders this process created, removed at exit (the per-process state the module exists for)."""


def scratch_dir(project_dir: Path) -> Path:
    """This process's scratch folder in the project, created (mode 0700) on first use."""
    parent = project_dir / SCRATCH
    folder = parent / _name(os.getpid())
    if folder in _registered and folder.is_dir():
        return folder
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder not in _registered:
        _registered.add(folder)
        atexit.register(remove, folder)
    return folder


def remove(folder: Path) -> None:
    """Remove a scratch folder and what is in it (at exit; quietly, the process is ending)."""
    shutil.rmtree(folder, ignore_errors=True)
    _registered.discard(folder)


def sweep(project_dir: Path) -> list[Path]:
    """Remove the scratch folders of processes that are gone; returns what was removed."""
    parent = project_dir / SCRATCH
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed: list[Path] = []
    for name in names:
        if not _owner_alive(name):
            shutil.rmtree(parent / name, ignore_errors=True)
            removed.append(parent / name)
    return removed


__all__ = ["SCRATCH", "remove", "scratch_dir", "sweep"]
