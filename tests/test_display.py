"""What a task writes is shown as text: no rich markup, no terminal control, on a real terminal.

`ork run`, `ork runs show` and `ork logs` run as child processes on a pseudo-terminal, since
rich picks its live display and colours by ``isatty``.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from orkhelpers import write

from ork_core.display import visible

NASTY = "error in [/src/main.c:12] [bold]bold?[/] [link=https://example.com]link[/link] [/]"
CONTROL = "\x1b[31mred\x1b[0m \x1b]8;;https://evil.example\x1b\\osc\x1b]8;;\x1b\\ bell\x07 back\x08 cr\r end\x9b2J"
SHOWN_CONTROL = "\\x1b[31mred\\x1b[0m \\x1b]8;;https://evil.example\\x1b\\osc\\x1b]8;;\\x1b\\ bell\\a back\\b cr\\r end\\x9b2J"
RAW = ["\x1b[31mred", "\x1b]8;;https://evil", "\x07", "\x08", "cr\r", "\x9b"]


def on_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run `ork ARGS` with stdout and stderr on a pseudo-terminal; (exit code, everything it wrote)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "ORK_DISABLE_PLUGINS": "1", "TERM": "xterm-256color", "COLUMNS": "400", "LINES": "50"}
    for name in ("ORK_DB", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ork_core", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=follower, stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(60), b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.fixture
def failed_run(project: Path) -> tuple[Path, str, str]:
    write(
        project / "tasks.py",
        f"""
        from ork import TaskError

        def shout(ctx) -> dict:
            ctx.log.line("stdout", {NASTY + " " + CONTROL!r})
            return {{"note": {NASTY!r}, "raw": {CONTROL!r}}}

        def fail(ctx) -> None:
            raise TaskError({NASTY + " " + CONTROL!r})
        """,
    )
    write(
        project / "wf.yaml",
        """
        name: nasty
        params: {label: x}
        tasks:
          shout: {module: tasks, function: shout}
          fail: {module: tasks, function: fail, depends_on: [shout]}
        """,
    )
    code, out = on_terminal(["run", "wf.yaml", "--param", "label=[/] [bold]"], project)
    run_id = out.split("run ", 1)[1].split()[0]
    return project, run_id, out + f"\n(exit {code})"


def test_visible_escapes_control_characters_and_keeps_tab_and_newline() -> None:
    assert visible(CONTROL) == SHOWN_CONTROL
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("abc\u202edef\u2028") == "abc\\u202edef\\u2028"
    assert visible(NASTY) == NASTY


def test_run_on_a_terminal_shows_markup_and_escapes_as_text(failed_run: tuple[Path, str, str]) -> None:
    _, _, out = failed_run
    assert out.endswith("(exit 1)"), out
    assert "Traceback" not in out and "MarkupError" not in out, out
    assert f"fail: {NASTY} {SHOWN_CONTROL}" in out, out  # the live line of the failed task
    assert "failed" in out and "success" in out
    for raw in RAW:
        assert raw not in out, (raw, out)


def test_runs_show_and_logs_show_the_text_literally(failed_run: tuple[Path, str, str]) -> None:
    project, run_id, _ = failed_run
    code, out = on_terminal(["runs", "show", run_id], project)
    assert code == 0, out
    assert "params {'label': '[/] [bold]'}" in out, out
    assert f"{NASTY} {SHOWN_CONTROL}" in out, out  # the failed task's error
    assert '"note": "error in [/src/main.c:12] [bold]bold?[/]' in out, out  # the output's start
    for raw in RAW:
        assert raw not in out, (raw, out)

    code, out = on_terminal(["logs", run_id], project)
    assert code == 0, out
    assert f"shout#1 stdout: {NASTY} {SHOWN_CONTROL}" in out, out
    for raw in RAW:
        assert raw not in out, (raw, out)

    code, out = on_terminal(["runs"], project)
    assert code == 0 and run_id in out, out
