"""Turning a finished command into the task's result: exit status, output JSON, artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from ork import TaskError
from ork_core.proctree import Completed
from ork_executor_process.streams import OutputRecorder


def exit_problem(completed: Completed, *, shell: bool) -> str | None:
    """What went wrong, in words, or None when the command succeeded."""
    code = completed.returncode
    if code == 0:
        return None
    if code < 0:
        return f"command was killed by signal {completed.signal_name} ({-code})"
    message = f"command exited with code {code}"
    if shell and 128 < code < 128 + 65:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        message += f" (the shell reports 128+{code - 128}: a process it ran was killed by {name})"
    return message


def failure_message(problem: str, recorder: OutputRecorder) -> str:
    """The exit problem with the last lines of stderr, so the error says why without `ork logs`."""
    parts = [problem]
    if recorder.stderr_tail:
        parts.append("last stderr: " + " | ".join(recorder.stderr_tail))
    if recorder.decode_error:
        parts.append(recorder.decode_error)
    return "; ".join(parts)


def read_output_file(path: str) -> tuple[bool, Any]:
    """(written, value) for the file named by ORK_OUTPUT, which is removed; invalid JSON fails the task.

    Most commands never write it: one access() is all that costs them.
    """
    if not os.access(path, os.F_OK):
        return False, None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        with open(fd, "rb") as fh:
            data = fh.read()
    finally:
        os.unlink(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"$ORK_OUTPUT ({path}) is not UTF-8 text: {exc}") from None
    if not text.strip():
        return False, None
    try:
        return True, json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskError(
            f"$ORK_OUTPUT ({path}) is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def last_line_json(recorder: OutputRecorder) -> Any:
    """The value of ``output: last_line_json``."""
    raw = recorder.last_stdout
    if raw is None:
        raise TaskError("output: last_line_json, but the command printed nothing on stdout")
    text = raw.decode(recorder.encoding, "replace").strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise TaskError(f"output: last_line_json, but the last stdout line is not JSON ({exc.msg}): {shown!r}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_artifacts(folder: Path, exclude: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every regular file under `folder` but the top-level names in `exclude`: name, path, size, sha256."""
    found: list[dict[str, Any]] = []
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if name in exclude and Path(root) == folder:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            found.append(
                {
                    "name": path.relative_to(folder).as_posix(),
                    "path": str(path),
                    "size": path.stat().st_size,
                    "sha256": _sha256(path),
                }
            )
    return found
