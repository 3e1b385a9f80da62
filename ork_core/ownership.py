"""Which process executes a run: the owner token stored with it, and whether it still lives.

A run is executed by one process at a time. The process claims the run in storage with a
compare-and-set of the run's owner (`Storage.claim_run`) before it touches anything, and
clears it when `Scheduler.run` ends. The token names the host, the pid and the process's
start time, so a pid the kernel handed to an unrelated process after ork was killed is not
mistaken for a live owner: a claim from a dead owner is taken by a CAS from that exact
token, so of two `ork resume` racing after a crash only one wins.

`ork scheduler` adds a lease to its claims (see `ork_core.storage.base`): a process on
another host cannot be checked from here, so its claim is taken to be alive until its lease
ends. ``ORK_HOST`` names this host in tokens where the host name does not tell machines, or
pid namespaces, apart (containers sharing a host name), and lets tests play several hosts.

Storage treats the token as opaque text; only this module reads it.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Owner"]


@dataclass(frozen=True)
class Owner:
    """A process on a host: ``host/pid/started``, `started` being ``boot:ticks`` from /proc.

    An empty `host` or `started` means unknown (a run written before owners existed holds
    ``/pid/``): the pid alone then decides, as it did before.
    """

    host: str
    pid: int
    started: str = ""

    @classmethod
    def current(cls) -> Owner:
        """This process (computed per call: a forked child is another owner)."""
        pid = os.getpid()
        return cls(_host(), pid, _start_of(pid) or "")

    @classmethod
    def parse(cls, token: str) -> Owner:
        host, _, rest = token.partition("/")
        pid, _, started = rest.partition("/")
        try:
            return cls(host, int(pid), started)
        except ValueError:
            return cls(host, -1, started)  # unreadable: never alive, so it can be taken

    @property
    def token(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    def alive(self) -> bool:
        """Whether the process still runs; a process on another host is assumed alive."""
        if self.host and self.host != _host():
            return True
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        if not Path("/proc/self/stat").exists():
            return True  # no /proc: the pid exists, and that is all ork can tell
        stat = _stat(self.pid)
        if stat is None or stat[0] == "Z":
            return False
        return not self.started or stat[1] == self.started

    def describe(self) -> str:
        """For messages: ``process 123 on host h (started 2026-12-03 09:47:43)``."""
        text = f"process {self.pid} on {'host ' + self.host if self.host else 'this host'}"
        wall = _wall_time(self.started)
        return f"{text} (started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(wall))})" if wall else text


def _host() -> str:
    return os.environ.get("ORK_HOST") or socket.gethostname()


def _stat(pid: int) -> tuple[str, str] | None:
    """The state letter and ``boot:ticks`` start time of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(") ", 1)[-1].split()
    except OSError:
        return None
    # fields[0] is field 3 of proc(5) (state); the start time is field 22
    return fields[0], f"{_boot_id()}:{fields[19]}"


def _start_of(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[1] if stat else None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "?"


def _wall_time(started: str) -> float | None:
    """The start time as seconds since the epoch, when it is from this boot."""
    boot, _, ticks = started.partition(":")
    if not ticks.isdigit() or boot != _boot_id():
        return None
    try:
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return btime + int(ticks) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None
