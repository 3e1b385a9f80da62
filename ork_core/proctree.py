"""Owning a task's whole process tree: start it in its own session, end all of it.

A task's command runs as the leader of a new session and process group, so everything it
starts (shells, grandchildren in the background) shares the group id, and a child that
moves to another group of the same session (a job-control shell) still shares the session
id, which equals the leader's pid. Ending a task is SIGTERM to all of them, a grace period,
SIGKILL, then a check through /proc that nothing of the tree is left. The group id is
committed to storage while the task runs so a restarted ork can end what a killed ork left
behind (`Scheduler.load_state` calls `end_group`). Every task process also carries its run
and task in its environment (``ORK_RUN_ID``, ``ORK_TASK``); `marked_processes` finds them
through /proc, which covers a tree whose group id was not committed yet when ork died and
guards a recorded id against reuse by an unrelated process.

`TreeProcess` runs one command that way from asyncio: output is read in fixed-size chunks
and handed on line by line, so a task that prints gigabytes never costs more than a chunk
and one (bounded) line of memory.

Limits: a process that calls ``setsid()`` itself leaves both group and session and cannot
be found this way (only a cgroup could hold it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import select
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_GRACE = 5.0
KILL_WAIT = 5.0
"""Seconds SIGKILLed processes get to disappear before `end_group` reports failure."""
READ_SIZE = 1 << 16
DEFAULT_MAX_LINE = 1 << 16
"""A line longer than this is handed on in pieces, so one endless line cannot fill memory."""
DRAIN_TIMEOUT = 2.0
"""After the tree is gone, how long to wait for the pipes to close (a process that escaped
the session may hold them open for ever)."""
ESCAPE_CHECK = 0.1
"""After the tree is gone, how long the pipes may stay open before ork looks for processes
that left the session but carry the tree's markers (a /proc scan: not on every task)."""

OnLines = Callable[[str, list[bytes]], None]
OnChunk = Callable[[str, bytes], None]


# -- finding and signalling a tree -----------------------------------------------------------


def _protected(pgid: int) -> bool:
    """Never signal ork's own group or session, nor init: a corrupt record must not kill ork."""
    return pgid <= 1 or pgid in (os.getpgrp(), os.getsid(0))


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded) in process group `pgid` or in the session it leads, via /proc."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel about the group only
        return [pgid] if _group_exists(pgid) else []
    members: list[int] = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ... ; comm may contain spaces and parentheses
        rest = stat[stat.rfind(b")") + 2 :].split(None, 4)
        if len(rest) >= 4 and rest[0] != b"Z" and (int(rest[2]) == pgid or int(rest[3]) == pgid):
            members.append(int(name))
    return members


def _group_exists(pgid: int) -> bool:
    """Cheap check (one syscall, zombies count): does any process still have this group id?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tree_alive(pgid: int) -> bool:
    """True while a live process of the group remains.

    One syscall when the group is empty (the usual case once a command has exited); the
    /proc scan only when something may be left. It trusts the group: a member that moved
    to another group of the session is found by `end_group`, not by this quick check.
    """
    return _group_exists(pgid) and bool(group_members(pgid))


RUN_MARKER = "ORK_RUN_ID"
TASK_MARKER = "ORK_TASK"
ATTEMPT_MARKER = "ORK_ATTEMPT"
"""Environment variables every task process gets; they identify a tree after ork died."""


WORKER_MARKER = "ORK_WORKER"
"""Set (to its id) in the environment of `ork worker`, so in every task process it starts: those
processes carry their run's marker too, but are the worker's to end, not a scheduler's."""


def task_markers(run_id: str, task: str, attempt: int) -> dict[str, str]:
    """The variables that mark the processes of one task attempt (put them in its environment)."""
    return {RUN_MARKER: run_id, TASK_MARKER: task, ATTEMPT_MARKER: str(attempt)}


def run_processes(run_id: str) -> dict[int, tuple[str, int]] | None:
    """The processes of `run_id`'s tasks that schedulers (`ork run`, `resume`, `scheduler`) of this machine started.

    What an `ork worker` of this machine runs for the run carries the run's marker too, but is
    alive and the worker's own: a scheduler taking over the run, or stopping, must leave it be.
    """
    return marked_processes({RUN_MARKER: run_id}, unmarked=(WORKER_MARKER,))


def marked_processes(
    markers: Mapping[str, str], *, unmarked: Collection[str] = (),
) -> dict[int, tuple[str, int]] | None:
    """Live processes whose environment has all of `markers` and none of the `unmarked` variables.

    Returns pid -> (task name, process group). Reads ``/proc/*/environ`` (the environment a
    process was started with; readable for processes of the same user), about a millisecond
    per hundred processes. None where there is no /proc to read.
    """
    if not Path("/proc").is_dir():
        return None
    wanted = [f"{key}={value}".encode() for key, value in markers.items()]
    unwanted = tuple(f"{key}=".encode() for key in unmarked)
    found: dict[int, tuple[str, int]] = {}
    for pid, variables in _environments():
        if not all(marker in variables for marker in wanted):
            continue
        if unwanted and any(v.startswith(unwanted) for v in variables):
            continue
        with contextlib.suppress(OSError):
            found[pid] = (_value(variables, TASK_MARKER), os.getpgid(pid))
    return found


def processes_with(variable: str) -> dict[int, tuple[str, int]] | None:
    """Live processes whose environment sets `variable`: pid -> (its value, process group); None without /proc."""
    if not Path("/proc").is_dir():
        return None
    prefix = f"{variable}=".encode()
    found: dict[int, tuple[str, int]] = {}
    for pid, variables in _environments():
        if any(v.startswith(prefix) for v in variables):
            with contextlib.suppress(OSError):
                found[pid] = (_value(variables, variable), os.getpgid(pid))
    return found


def _environments() -> Iterator[tuple[int, list[bytes]]]:
    """Every other process's pid and environment (``NAME=value`` items), as far as /proc lets this one read."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        yield int(name), data.split(b"\0")


def _value(variables: list[bytes], name: str) -> str:
    prefix = f"{name}=".encode()
    return next((v[len(prefix) :].decode("utf-8", "replace") for v in variables if v.startswith(prefix)), "")


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group and to the session's members outside it; False if none was found."""
    if _protected(pgid):
        return False
    sent = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        sent = True
    for pid in group_members(pgid):
        try:
            if os.getpgid(pid) != pgid:
                os.kill(pid, sig)
                sent = True
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def _poll_delays(first: float = 0.005, cap: float = 0.1) -> Callable[[], float]:
    """Polling intervals that start short (most processes exit at once) and back off."""
    delay = first

    def step() -> float:
        nonlocal delay
        current, delay = delay, min(delay * 2, cap)
        return current

    return step


def end_group(pgid: int, grace: float = DEFAULT_GRACE, poll: float = 0.1) -> bool:
    """SIGTERM the tree, wait up to `grace` seconds, SIGKILL what is left; True if none remain.

    Blocking: call it from a worker thread, or where blocking is fine (resuming a run). It
    does not reap: the leader, if it is this process's child, is the caller's to wait for.
    """
    if _protected(pgid):
        return False
    if not group_members(pgid):
        return True
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        signal_group(pgid, sig)
        if sig == signal.SIGTERM:
            signal_group(pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        deadline = time.monotonic() + wait
        delays = _poll_delays(cap=poll)
        while True:
            if not group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(delays())
    return not group_members(pgid)


async def end_group_async(pgid: int, grace: float = DEFAULT_GRACE, poll: float = 0.1) -> bool:
    """`end_group` for an event loop: the waiting happens in ``asyncio.sleep``."""
    if _protected(pgid):
        return False
    if not _group_exists(pgid) and not group_members(pgid):
        return True
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        signal_group(pgid, sig)
        if sig == signal.SIGTERM:
            signal_group(pgid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        delays = _poll_delays(cap=poll)
        while True:
            if not group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(delays())
    return not group_members(pgid)


# -- splitting output into lines ------------------------------------------------------------------


def _utf8_cut(data: bytes | bytearray, limit: int) -> int:
    """The largest cut ≤ limit that does not split a UTF-8 sequence (bytes 10xxxxxx continue one)."""
    cut = limit
    while cut > limit - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > 0 else limit


class LineSplitter:
    """Turns chunks of a byte stream into lines (without ``\\n`` / ``\\r\\n``).

    Holds at most one incomplete line; a line longer than `max_line` comes out in pieces
    cut on UTF-8 character boundaries (None: no limit).
    """

    def __init__(self, max_line: int | None = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._partial += data
            return self._cut_partial()
        if self._partial:
            data = bytes(self._partial) + data
        lines = data.split(b"\n")
        self._partial = bytearray(lines.pop())
        # per-line Python work only when the chunk needs it: this runs for every byte of output
        if b"\r" in data:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if self.max_line is not None and len(data) > self.max_line and max(map(len, lines)) > self.max_line:
            lines = [piece for line in lines for piece in self._pieces(line)]
        return lines + self._cut_partial() if len(self._partial) > (self.max_line or len(self._partial)) else lines

    def flush(self) -> list[bytes]:
        """The last line when the stream ended without a newline."""
        if not self._partial:
            return []
        line, self._partial = bytes(self._partial), bytearray()
        return self._pieces(line[:-1] if line.endswith(b"\r") else line)

    def _pieces(self, line: bytes) -> list[bytes]:
        if self.max_line is None or len(line) <= self.max_line:
            return [line]
        pieces = []
        while len(line) > self.max_line:
            cut = _utf8_cut(line, self.max_line)
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
        return pieces

    def _cut_partial(self) -> list[bytes]:
        if self.max_line is None or len(self._partial) <= self.max_line:
            return []
        pieces = []
        while len(self._partial) > self.max_line:
            cut = _utf8_cut(self._partial, self.max_line)
            pieces.append(bytes(self._partial[:cut]))
            del self._partial[:cut]
        return pieces


# -- running one command as a tree ----------------------------------------------------------------


_RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))
"""Signals Python ignores that a started program must see with their default action (as Popen does)."""
_found: dict[tuple[str, str], str] = {}
_sealed = False


def _seal_inherited_descriptors() -> None:
    """Make the descriptors ork itself inherited close-on-exec, once per process.

    Python opens every descriptor close-on-exec, but those a process inherits keep their
    flag; posix_spawn (before Python 3.13's POSIX_SPAWN_CLOSEFROM) would hand them on to every
    task, which Popen never does (close_fds). A pipe handed on that way can keep a caller of
    ork waiting for an end of file until the task's last grandchild exits.
    """
    global _sealed
    _sealed = True
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(3, 256)]
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


def _executable(program: str, env: Mapping[str, str]) -> str:
    """`program` looked up on the child's PATH, as exec would (cached per program and PATH)."""
    if "/" in program:
        return program
    path = env.get("PATH", os.defpath)
    key = (program, path)
    found = _found.get(key)
    if found is None:
        for folder in path.split(os.pathsep):
            candidate = os.path.join(folder or ".", program)
            if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
                found = candidate
                break
        else:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isabs(found) and len(_found) < 1024:  # "." on PATH depends on the cwd: not cached
            _found[key] = found
    return found


def start_leader(
    argv: Sequence[str],
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    stdin: int | None,
    stdout: int,
    stderr: int,
    keep: tuple[int, ...] = (),
) -> int:
    """Start `argv` as the leader of a new session with the given descriptors; returns its pid.

    ``posix_spawn`` when it can do the job: Python's own work around it is a fraction of
    Popen's, which matters when tasks are short. It cannot change directory or keep extra
    descriptors, so a command that needs either goes through Popen. Either way the child
    gets descriptors 0-2 only (see `_seal_inherited_descriptors`). The caller reaps the pid.
    """
    if not keep and hasattr(os, "posix_spawn") and (cwd is None or os.fspath(cwd) == os.getcwd()):
        try:
            executable = _executable(argv[0], env)
            actions: list[tuple[Any, ...]] = [
                (os.POSIX_SPAWN_DUP2, stdin, 0) if stdin is not None else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
            ]
            closefrom = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)
            if closefrom is not None:
                actions.append((closefrom, 3))
            elif not _sealed:
                _seal_inherited_descriptors()
            return os.posix_spawn(executable, list(argv), env, file_actions=actions, setsid=True, setsigdef=_RESET_SIGNALS)
        except OSError:  # the program moved or changed since it was looked up: look again next time
            _found.pop((argv[0], env.get("PATH", os.defpath)), None)
            raise
        except NotImplementedError:  # no POSIX_SPAWN_SETSID in this libc
            pass
    popen = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout, stderr=stderr, start_new_session=True, pass_fds=keep,
    )
    popen.returncode = 0  # reaped by the caller, not by Popen: keep Popen.__del__ quiet
    return popen.pid



@dataclass(frozen=True)
class Completed:
    """How a tree's leader ended."""

    returncode: int
    """The exit code, or minus the signal number when a signal killed the leader."""
    pgid: int
    duration: float
    leftovers: int = 0
    """Processes of the tree still running when the leader exited (ork ended them)."""
    ended: bool = False
    """True when ork ended the tree (cancellation or a failed output handler)."""
    unclosed: tuple[str, ...] = ()
    """Streams still open after the tree was gone (held by a process that left the session)."""

    @property
    def signal_name(self) -> str | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


class _Readers:
    """The pipes and pidfds of all trees of one event loop, in one epoll set the loop watches.

    asyncio's add_reader/remove_reader cost tens of microseconds of Python per descriptor,
    and every task has three, each added and removed once; an epoll set costs a system call.
    The set closes itself once it has been empty for `IDLE` seconds.
    """

    IDLE = 1.0
    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Readers] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._idle: asyncio.TimerHandle | None = None
        loop.add_reader(self._epoll.fileno(), self._ready)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Readers | _LoopReaders:
        if not hasattr(select, "epoll"):
            return _LoopReaders(loop)
        readers = cls._by_loop.get(loop)
        if readers is None:
            readers = cls._by_loop[loop] = cls(loop)
        return readers

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def remove(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is None:
            return
        self._epoll.unregister(fd)
        if not self._callbacks and self._idle is None:
            self._idle = self._loop.call_later(self.IDLE, self.close)

    def close(self) -> None:
        self._idle = None
        if self._callbacks or self._by_loop.get(self._loop) is not self:
            return
        del self._by_loop[self._loop]
        if not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0):
            callback = self._callbacks.get(fd)
            if callback is not None:
                try:
                    callback()
                except Exception as exc:  # noqa: BLE001 - one tree's failure must not starve the others
                    self._loop.call_exception_handler({"message": "error in a process tree callback", "exception": exc})


class _LoopReaders:
    """Where there is no epoll: the loop's own readers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        self._loop.add_reader(fd, callback)

    def remove(self, fd: int) -> None:
        self._loop.remove_reader(fd)


class TreeProcess:
    """One command run as the leader of a new session, streamed, and ended as a whole.

    ``await run()`` starts the command, hands its output to `on_chunk` (raw bytes, for
    files) and `on_lines` (complete lines, for logs), waits for the leader, ends any
    processes it left behind, and returns a `Completed`. If the awaiting task is cancelled
    (a timeout, Ctrl-C), the tree is ended — SIGTERM, `grace`, SIGKILL, confirmed through
    /proc, leader reaped — before the cancellation propagates. `on_start(pgid)` is called
    right after the start, so the caller can record the group.

    Everything happens on the loop's thread. Starting blocks it until the child has
    exec'd, but vfork-style starts keep the GIL for that time anyway, so a worker thread
    would overlap nothing and only add a hop. The leader's exit arrives through a pidfd,
    and no thread waits per process.

    `channel_env` opens a third pipe to the child: its write end's number is put in the
    child's environment under that name, and its lines arrive as stream ``"channel"``
    (never cut: a structured message must arrive whole).

    `prepare` runs just before the process starts (create the folders the command needs
    there); environment variables it returns are added to the child's.

    `markers` are environment variables (added to `env`) that identify this tree's
    processes: ending the tree also ends processes that carry all of them but left its
    session with ``setsid``, and so do leftovers that keep the tree's pipes open after the
    leader exited (found through /proc, only on those paths, never for a tree that ends
    cleanly).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        on_lines: OnLines | None = None,
        on_chunk: OnChunk | None = None,
        on_start: Callable[[int], None] | None = None,
        grace: float = DEFAULT_GRACE,
        max_line: int | None = DEFAULT_MAX_LINE,
        stdin: bytes | None = None,
        channel_env: str | None = None,
        prepare: Callable[[], Mapping[str, str] | None] | None = None,
        markers: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.markers = dict(markers) if markers else None
        self.cwd = cwd
        self.env = env
        self.on_lines = on_lines
        self.on_chunk = on_chunk
        self.on_start = on_start
        self.grace = grace
        self.max_line = max_line
        self.stdin = stdin
        self.channel_env = channel_env
        self.prepare = prepare
        self.pid: int | None = None
        self.gone = False
        """True once ork has seen that nothing of the tree is left (after `run` returned)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers: _Readers | _LoopReaders  # set by run()
        self._fds: dict[str, int] = {}
        self._splitters: dict[str, LineSplitter] = {}
        self._open_streams = 0
        self._returncode: int | None = None
        self._exited: asyncio.Future[int] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._eof: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._ending: asyncio.Task[bool] | None = None
        self._pidfd: int | None = None
        self._stdin_fd: int | None = None
        self._stdin_view: memoryview | None = None
        self._started = 0.0
        self._start_error: BaseException | None = None

    @property
    def pgid(self) -> int | None:
        return self.pid

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the tree runs in (to end it from another thread)."""
        return self._loop

    # -- start --------------------------------------------------------------------------------

    def _spawn(self) -> dict[str, int]:
        """Create the pipes and start the leader; returns ork's ends of the pipes."""
        env: Mapping[str, str] = os.environ if self.env is None else self.env
        if self.markers:
            env = {**env, **self.markers}
        if self.prepare is not None:
            extra = self.prepare()
            if extra:
                env = {**env, **extra}
        child_ends: list[int] = []
        mine: dict[str, int] = {}
        try:
            for name in ("stdout", "stderr") + (("channel",) if self.channel_env else ()):
                r, w = os.pipe()
                mine[name] = r
                child_ends.append(w)
            if self.channel_env is not None:
                env = {**env, self.channel_env: str(child_ends[2])}
            stdin: int | None = None
            if self.stdin is not None:
                r, w = os.pipe()
                mine["stdin"] = w
                child_ends.append(r)
                stdin = r
            self.pid = start_leader(
                self.argv, self.cwd, env, stdin, child_ends[0], child_ends[1],
                keep=(child_ends[2],) if self.channel_env is not None else (),
            )
        except BaseException:
            for fd in mine.values():
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        self._started = time.monotonic()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        if self.on_start is not None:
            try:
                self.on_start(self.pid)
            except BaseException as exc:  # noqa: BLE001 - raised by run(), after the tree is ended
                self._start_error = exc
        return mine

    def _attach(self, mine: dict[str, int]) -> None:
        """Hook the pipes and the exit into the loop (on the loop's thread)."""
        loop = self._loop
        assert loop is not None
        self._exited = loop.create_future()
        self._wake = loop.create_future()
        self._eof = loop.create_future()
        self._watch("stdout", mine["stdout"], self.max_line)
        self._watch("stderr", mine["stderr"], self.max_line)
        if "channel" in mine:
            self._watch("channel", mine["channel"], None)
        if "stdin" in mine:
            self._stdin_fd = mine["stdin"]
            os.set_blocking(self._stdin_fd, False)
            self._stdin_view = memoryview(self.stdin or b"")
            loop.add_writer(self._stdin_fd, self._writable)
        if self._pidfd is not None:
            self._readers.add(self._pidfd, self._reap)
        else:
            self._poll_exit()

    def _watch(self, name: str, fd: int, max_line: int | None) -> None:
        assert self._loop is not None
        os.set_blocking(fd, False)
        self._fds[name] = fd
        self._splitters[name] = LineSplitter(max_line)
        self._open_streams += 1
        self._readers.add(fd, functools.partial(self._readable, name))

    def _poll_exit(self) -> None:
        """Without pidfd (old kernels, other systems): look for the exit every 10 ms."""
        assert self._loop is not None and self._exited is not None
        self._reap()
        if not self._exited.done():
            self._loop.call_later(0.01, self._poll_exit)

    def _reap(self) -> None:
        assert self._exited is not None and self.pid is not None and self._loop is not None
        if self._exited.done():
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: the status is lost
            pid, status = self.pid, 0
        if pid == 0:
            return
        if self._pidfd is not None:
            self._readers.remove(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self._returncode)
        self._set(self._wake)

    @staticmethod
    def _set(fut: asyncio.Future[None] | None) -> None:
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- I/O callbacks ------------------------------------------------------------------------

    def _readable(self, name: str) -> None:
        fd = self._fds.get(name)
        if fd is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            self._consume(name, data)
        except BaseException as exc:  # noqa: BLE001 - a handler failed (disk full …): stop the whole tree
            self._close_stream(name)
            if self._failure is None:
                self._failure = exc
            self._set(self._wake)

    def _consume(self, name: str, data: bytes) -> None:
        if data:
            if self.on_chunk is not None and name != "channel":
                self.on_chunk(name, data)
            lines = self._splitters[name].feed(data)
        else:
            self._close_stream(name)
            lines = self._splitters[name].flush()
        if lines and self.on_lines is not None:
            self.on_lines(name, lines)

    def _close_stream(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is None:
            return
        self._readers.remove(fd)
        os.close(fd)
        self._open_streams -= 1
        if self._open_streams == 0:
            self._set(self._eof)

    def _writable(self) -> None:
        assert self._stdin_fd is not None and self._stdin_view is not None
        try:
            written = os.write(self._stdin_fd, self._stdin_view[:READ_SIZE])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the child closed its stdin (EPIPE): it does not want the rest
            written = len(self._stdin_view)
        self._stdin_view = self._stdin_view[written:]
        if not self._stdin_view:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_fd is not None:
            assert self._loop is not None
            self._loop.remove_writer(self._stdin_fd)
            os.close(self._stdin_fd)
            self._stdin_fd = None
            self._stdin_view = None

    def _drain_now(self) -> None:
        """Read whatever the pipes hold right now (used once the tree is gone).

        Bounded, so a process that escaped the session and writes without end cannot keep
        ork here.
        """
        for name in list(self._fds):
            for _ in range(256):
                if name not in self._fds:
                    break
                try:
                    data = os.read(self._fds[name], READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    data = b""
                self._consume(name, data)

    # -- the run ----------------------------------------------------------------------------------

    async def run(self) -> Completed:
        """Start, stream and wait; on cancellation end the tree before re-raising."""
        if self._loop is not None:
            raise RuntimeError("a TreeProcess runs once")
        self._loop = asyncio.get_running_loop()
        self._readers = _Readers.of(self._loop)
        self._attach(self._spawn())
        assert self._exited is not None and self._wake is not None and self._eof is not None
        assert self.pid is not None
        try:
            if self._start_error is not None:
                raise self._start_error
            await self._wake
            if self._failure is not None:
                raise self._failure
            requested = self._ending is not None
            leftovers = 0
            if requested or _group_exists(self.pid):
                leftovers = 0 if requested else len(group_members(self.pid))
                self.gone = await self._end_uninterrupted()
            else:
                self.gone = True
            if not self._eof.done():
                if not await self._eof_within(ESCAPE_CHECK if self.markers else DRAIN_TIMEOUT) and self.markers:
                    # the pipes are held by something outside the group: a process that left the
                    # session but still carries this tree's markers is a leftover like any other
                    leftovers += await self._end_marked()
                    await self._eof_within(DRAIN_TIMEOUT)
                self._drain_now()
            if self._failure is not None:
                raise self._failure
            return Completed(
                returncode=self._exited.result(),
                pgid=self.pid,
                duration=time.monotonic() - self._started,
                leftovers=leftovers,
                ended=requested,
                unclosed=tuple(name for name in ("stdout", "stderr", "channel") if name in self._fds),
            )
        except BaseException:
            await self._end_uninterrupted()
            with contextlib.suppress(Exception):
                self._drain_now()
            raise
        finally:
            self._close_all()

    async def end(self) -> bool:
        """End the tree now (SIGTERM, grace, SIGKILL), wait until it is gone; True if confirmed."""
        if self.pid is None or self._loop is None:
            return True
        if self._ending is None:
            self._ending = self._loop.create_task(self._end_and_reap())
        return await asyncio.shield(self._ending)

    async def _eof_within(self, seconds: float) -> bool:
        assert self._eof is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._eof), seconds)
        return self._eof.done()

    def _escaped_groups(self) -> dict[int, int]:
        """Groups (other than the tree's own) of processes carrying the markers: pgid -> processes."""
        groups: dict[int, int] = {}
        if self.markers:
            for _, pgid in (marked_processes(self.markers) or {}).values():
                if pgid != self.pid and not _protected(pgid):
                    groups[pgid] = groups.get(pgid, 0) + 1
        return groups

    async def _end_marked(self) -> int:
        """End the processes that left the session but carry the markers; how many there were."""
        groups = self._escaped_groups()
        await asyncio.gather(*(end_group_async(pgid, self.grace) for pgid in groups))
        return sum(groups.values())

    async def _end_and_reap(self) -> bool:
        assert self.pid is not None and self._exited is not None
        groups = [self.pid, *self._escaped_groups()]  # those that left the session still carry the markers
        gone = all(await asyncio.gather(*(end_group_async(pgid, self.grace) for pgid in groups)))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout=KILL_WAIT)
        return gone

    async def _end_uninterrupted(self) -> bool:
        """End the tree even if this task is cancelled again meanwhile (a second Ctrl-C)."""
        if self.pid is None:
            return True
        cancelled = False
        while True:
            try:
                result = await self.end()
                break
            except asyncio.CancelledError:
                cancelled = True
                if self._ending is not None and self._ending.done():
                    result = not self._ending.cancelled() and self._ending.result()
                    break
        if cancelled:
            raise asyncio.CancelledError
        return result

    def _close_all(self) -> None:
        for name in list(self._fds):
            self._close_stream(name)
        self._close_stdin()
        if self._pidfd is not None and self._loop is not None:
            self._readers.remove(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


async def run_tree(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    on_lines: OnLines | None = None,
    on_chunk: OnChunk | None = None,
    on_start: Callable[[int], None] | None = None,
    grace: float = DEFAULT_GRACE,
    max_line: int | None = DEFAULT_MAX_LINE,
) -> Completed:
    """Run `argv` as a tree and stream its output; see `TreeProcess`."""
    tree = TreeProcess(
        argv, cwd=cwd, env=env, on_lines=on_lines, on_chunk=on_chunk, on_start=on_start, grace=grace, max_line=max_line
    )
    return await tree.run()


__all__ = [
    "DEFAULT_GRACE",
    "Completed",
    "LineSplitter",
    "TreeProcess",
    "end_group",
    "end_group_async",
    "group_members",
    "marked_processes",
    "processes_with",
    "run_processes",
    "run_tree",
    "signal_group",
    "start_leader",
    "task_markers",
    "tree_alive",
]
