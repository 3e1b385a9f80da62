"""The process-tree mechanism with real processes: every check of "gone" reads /proc."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ork_core.proctree import (
    LineSplitter,
    TreeProcess,
    end_group,
    end_group_async,
    group_members,
    signal_group,
    tree_alive,
)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Groups a test started; whatever is left of them is killed afterwards, pass or fail."""
    started: list[int] = []
    yield started
    for pgid in started:
        signal_group(pgid, signal.SIGKILL)


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def spawn_tree(script: str, groups: list[int]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    groups.append(proc.pid)
    return proc


def test_end_group_ends_grandchildren(groups: list[int]) -> None:
    proc = spawn_tree("sleep 300 & sleep 300 & wait", groups)
    wait_until(lambda: len(group_members(proc.pid)) == 3)
    assert end_group(proc.pid, grace=2.0)
    proc.wait(5)
    assert group_members(proc.pid) == []


def test_end_group_kills_what_ignores_sigterm_after_the_grace(groups: list[int], tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = spawn_tree(f"trap '' TERM; sleep 300 & touch {ready}; wait", groups)
    wait_until(ready.exists)
    started = time.monotonic()
    assert end_group(proc.pid, grace=0.6)
    elapsed = time.monotonic() - started
    proc.wait(5)
    assert group_members(proc.pid) == []
    # the sleep dies at SIGTERM, the shell only at SIGKILL, after the grace
    assert 0.6 <= elapsed < 4.0


def test_a_member_in_another_group_of_the_session_is_ended(groups: list[int], tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    # like a job-control shell's background job: same session, a process group of its own
    leave = f"{sys.executable} -c 'import os, time; os.setpgid(0, 0); time.sleep(300)'"
    proc = spawn_tree(f"{leave} & echo $! > {pidfile}; wait", groups)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    bg = int(pidfile.read_text())
    wait_until(lambda: os.getpgid(bg) == bg)
    assert os.getsid(bg) == proc.pid
    assert bg in group_members(proc.pid)
    assert end_group(proc.pid, grace=2.0)
    proc.wait(5)
    assert group_members(proc.pid) == []


def test_ork_never_signals_its_own_group() -> None:
    assert end_group(os.getpgrp(), grace=0) is False
    assert signal_group(os.getpgrp(), 0) is False
    assert end_group(1, grace=0) is False


def test_end_group_async(groups: list[int]) -> None:
    proc = spawn_tree("sleep 300 & sleep 300", groups)
    wait_until(lambda: len(group_members(proc.pid)) >= 2)
    assert asyncio.run(end_group_async(proc.pid, grace=1.0))
    proc.wait(5)
    assert not tree_alive(proc.pid)


# -- TreeProcess ------------------------------------------------------------------------------


class Collected:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bytes]] = []
        self.chunks: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.pgids: list[int] = []

    def on_lines(self, stream: str, lines: list[bytes]) -> None:
        self.lines.extend((stream, line) for line in lines)

    def on_chunk(self, stream: str, data: bytes) -> None:
        self.chunks[stream] += data

    def on_start(self, pgid: int) -> None:
        self.pgids.append(pgid)


def tree(argv: list[str], got: Collected, **kw: object) -> TreeProcess:
    return TreeProcess(argv, on_lines=got.on_lines, on_chunk=got.on_chunk, on_start=got.on_start, **kw)  # type: ignore[arg-type]


def test_streams_lines_and_bytes() -> None:
    got = Collected()
    script = "printf 'one\\ntwo\\r\\n'; printf 'err\\n' >&2; printf 'tail'"
    done = asyncio.run(tree(["sh", "-c", script], got).run())
    assert done.returncode == 0 and done.leftovers == 0 and not done.ended
    assert [l for s, l in got.lines if s == "stdout"] == [b"one", b"two", b"tail"]
    assert [l for s, l in got.lines if s == "stderr"] == [b"err"]
    assert bytes(got.chunks["stdout"]) == b"one\ntwo\r\ntail"
    assert got.pgids == [done.pgid]


def test_exit_code_and_signal() -> None:
    got = Collected()
    assert asyncio.run(tree(["sh", "-c", "exit 7"], got).run()).returncode == 7
    killed = asyncio.run(tree(["sh", "-c", "kill -9 $$"], got).run())
    assert killed.returncode == -9 and killed.signal_name == "SIGKILL"


def test_missing_command_raises_before_start() -> None:
    got = Collected()
    with pytest.raises(FileNotFoundError):
        asyncio.run(tree(["ork-no-such-command-xyz"], got).run())
    assert got.pgids == []


def test_timeout_ends_the_whole_tree_before_returning(tmp_path: Path) -> None:
    got = Collected()
    pidfile = tmp_path / "pids"
    script = f"sleep 300 & echo $! >> {pidfile}; echo $$ >> {pidfile}; sleep 300"
    t = tree(["sh", "-c", script], got, grace=2.0)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(t.run(), 1.0)

    asyncio.run(main())
    assert t.pgid is not None
    # checked the moment the coroutine finished: nothing of the group may be left
    assert group_members(t.pgid) == []
    for pid in map(int, pidfile.read_text().split()):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


def test_sigterm_ignored_is_killed_after_grace(tmp_path: Path) -> None:
    got = Collected()
    ready = tmp_path / "ready"
    t = tree(["sh", "-c", f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done"], got, grace=0.7)

    async def main() -> float:
        task = asyncio.ensure_future(t.run())
        while not ready.exists():
            await asyncio.sleep(0.01)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    assert t.pgid is not None and group_members(t.pgid) == []
    assert 0.7 <= elapsed < 5.0


def test_leftovers_of_a_finished_leader_are_ended() -> None:
    got = Collected()
    done = asyncio.run(tree(["sh", "-c", "sleep 300 & echo started"], got).run())
    assert done.returncode == 0 and done.leftovers == 1
    assert group_members(done.pgid) == []
    assert (("stdout", b"started")) in got.lines


def test_end_from_another_task_while_running(tmp_path: Path) -> None:
    got = Collected()
    ready = tmp_path / "ready"
    t = tree(["sh", "-c", f"touch {ready}; sleep 300"], got, grace=1.0)

    async def main() -> int:
        task = asyncio.ensure_future(t.run())
        while not ready.exists():
            await asyncio.sleep(0.01)
        assert await t.end()
        return (await task).returncode

    assert asyncio.run(main()) == -signal.SIGTERM
    assert t.pgid is not None and group_members(t.pgid) == []


def test_stdin_and_channel() -> None:
    got = Collected()
    code = "import os,sys; data=sys.stdin.read(); os.write(int(os.environ['CH']), b'got %d\\n' % len(data))"
    t = TreeProcess(
        [sys.executable, "-c", code], on_lines=got.on_lines, stdin=b"x" * 300_000, channel_env="CH"
    )
    assert asyncio.run(t.run()).returncode == 0
    assert ("channel", b"got 300000") in got.lines


def test_a_failing_handler_stops_the_tree() -> None:
    def broken(stream: str, lines: list[bytes]) -> None:
        raise OSError("disk full")

    t = TreeProcess(["sh", "-c", "echo hi; sleep 300"], on_lines=broken, grace=1.0)
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(t.run())
    assert t.pgid is not None and group_members(t.pgid) == []


def test_many_short_processes_leave_no_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        for _ in range(50):
            await TreeProcess(["true"]).run()

    asyncio.run(main())
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # the loop's own self-pipe may linger


@pytest.mark.parametrize("elsewhere", [False, True], ids=["posix_spawn", "popen-for-cwd"])
def test_both_ways_of_starting_give_the_same_child(elsewhere: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same session, descriptors, signal dispositions, PATH lookup and cwd, whichever way it starts.

    ork's cwd is the task's in the first case (posix_spawn can be used), another folder in the
    second (Popen, which can change directory).
    """
    tools = tmp_path / "tools"
    tools.mkdir()
    probe = tools / "probe-xyz"
    probe.write_text(
        "#!/bin/sh\n"
        "echo sid=$(cut -d' ' -f6 /proc/$$/stat)\n"
        "echo pid=$$\n"
        'for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink $f)"; done >&2\n'
        "echo sigpipe=$(grep SigIgn /proc/$$/status)\n"
        "echo cwd=$(pwd -P)\n"
    )
    probe.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{tools}:{os.environ.get('PATH', '')}"}
    got = Collected()
    previous = os.getcwd()
    os.chdir(tmp_path if elsewhere else work)
    inherited, other_end = os.pipe()  # as if ork had inherited a descriptor from whoever started it
    os.set_inheritable(inherited, True)
    pipe = f"pipe:[{os.fstat(inherited).st_ino}]"
    monkeypatch.setattr("ork_core.proctree._sealed", False)
    try:
        done = asyncio.run(TreeProcess(["probe-xyz"], cwd=work, env=env, on_lines=got.on_lines).run())
    finally:
        os.chdir(previous)
        os.close(inherited)
        os.close(other_end)
    assert done.returncode == 0
    out = dict(line.decode().split("=", 1) for s, line in got.lines if s == "stdout")
    # The shell keeps descriptors of its own (the script, saved copies of 1 and 2) from 10 up,
    # so the pipe is recognised by what the child's descriptors point to, not by number.
    targets = dict(line.decode().split(" ", 1) for s, line in got.lines if s == "stderr")
    assert int(out["sid"]) == int(out["pid"]) == done.pgid  # the leader of a new session
    assert {"0", "1", "2"} <= targets.keys()
    assert pipe not in targets.values(), targets
    assert not int(out["sigpipe"].split()[-1], 16) & (1 << (signal.SIGPIPE - 1))  # SIGPIPE back to its default
    assert Path(out["cwd"]) == work.resolve()


def test_a_program_found_on_the_childs_path_only() -> None:
    with pytest.raises(FileNotFoundError):
        asyncio.run(TreeProcess(["sh", "-c", "true"], env={"PATH": "/nonexistent"}).run())


# -- LineSplitter -------------------------------------------------------------------------------


def test_splitter_joins_chunks_and_strips_crlf() -> None:
    s = LineSplitter()
    assert s.feed(b"ab") == []
    assert s.feed(b"c\r\nde\nf") == [b"abc", b"de"]
    assert s.flush() == [b"f"]
    assert s.flush() == []


def test_splitter_cuts_long_lines_on_character_boundaries() -> None:
    s = LineSplitter(max_line=10)
    text = ("é" * 12).encode()  # 24 bytes of two-byte characters
    pieces = s.feed(text + b"\n")
    assert all(len(p) <= 10 for p in pieces)
    assert b"".join(pieces) == text
    assert "".join(p.decode() for p in pieces) == "é" * 12  # every piece decodes on its own


def test_splitter_memory_is_bounded_for_an_endless_line() -> None:
    s = LineSplitter(max_line=1000)
    out: list[bytes] = []
    for _ in range(100):
        out += s.feed(b"x" * 777)
    assert len(s._partial) <= 1000
    assert sum(map(len, out)) + len(s._partial) == 77_700
