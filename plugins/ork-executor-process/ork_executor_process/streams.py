"""Where a command's stdout and stderr go: files (every byte) and the task's log (decoded lines).

Memory stays flat whatever the command prints: bytes go to the files as they arrive, lines
go to the log up to `log_max_bytes` per stream, and only the last stdout line and a short
tail of stderr are kept (for ``output: last_line_json`` and for error messages).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import BinaryIO

from ork import Context

STREAMS = ("stdout", "stderr")
STDERR_TAIL = 5
TAIL_CHARS = 500


class OutputRecorder:
    """Receives a command's output from `ork_core.proctree.TreeProcess` (on_chunk / on_lines)."""

    def __init__(self, ctx: Context, *, encoding: str, errors: str, log_max_bytes: int | None) -> None:
        self.ctx = ctx
        self.folder: Path | None = None
        """The attempt folder: created before the start for ``artifacts: true``, else at the first byte."""
        self.encoding = encoding
        self.errors = errors
        self.log_max_bytes = log_max_bytes
        self._files: dict[str, BinaryIO] = {}
        self.bytes = dict.fromkeys(STREAMS, 0)
        self.lines_seen = dict.fromkeys(STREAMS, 0)
        self._logged = dict.fromkeys(STREAMS, 0)
        self.unlogged = dict.fromkeys(STREAMS, 0)
        self.decode_error: str | None = None
        self.decode_error_stream: str | None = None
        self.last_stdout: bytes | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)

    # -- called by TreeProcess --------------------------------------------------------------------

    def chunk(self, stream: str, data: bytes) -> None:
        """Every byte, unchanged, into ``<stream>.log`` (opened when the first byte arrives)."""
        out = self._files.get(stream)
        if out is None:
            if self.folder is None:  # a command that prints nothing never costs a folder
                self.folder = self.ctx.ensure_artifact_dir()
            # owner-only (0600), like everything in .ork/: a command's output may hold what it should not
            fd = os.open(self.path(stream), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            out = self._files[stream] = open(fd, "wb")  # noqa: SIM115 - closed in close()
        out.write(data)
        self.bytes[stream] += len(data)

    def lines(self, stream: str, lines: list[bytes]) -> None:
        start = self.lines_seen[stream]
        self.lines_seen[stream] = start + len(lines)
        self._remember(stream, lines)
        if self.log_max_bytes is not None and self._logged[stream] >= self.log_max_bytes:
            self._check_only(stream, lines, start)
            return
        log_line = self.ctx.log.line
        for number, raw in enumerate(lines, start + 1):
            if self.log_max_bytes is not None and self._logged[stream] + len(raw) + 1 > self.log_max_bytes:
                self._logged[stream] = self.log_max_bytes
                rest = lines[number - start - 1 :]
                self._check_only(stream, rest, number - 1)
                return
            self._logged[stream] += len(raw) + 1
            log_line(stream, self._decode(stream, raw, number))

    # -- helpers ------------------------------------------------------------------------------------

    def _decode(self, stream: str, raw: bytes, number: int) -> str:
        try:
            return raw.decode(self.encoding, self.errors)
        except UnicodeDecodeError as exc:
            if self.decode_error is None:
                self.decode_error_stream = stream
                self.decode_error = (
                    f"{stream} line {number} is not valid {self.encoding} "
                    f"(byte 0x{raw[exc.start]:02x} at position {exc.start})"
                )
            return raw.decode(self.encoding, "backslashreplace")

    def _check_only(self, stream: str, lines: list[bytes], start: int) -> None:
        """Past the log limit: no logging, but a bad byte must still fail a strict task."""
        blob = b"\n".join(lines)
        self.unlogged[stream] += len(blob) + 1
        if self.errors != "strict" or self.decode_error is not None:
            return
        try:
            blob.decode(self.encoding)
        except UnicodeDecodeError:
            for number, raw in enumerate(lines, start + 1):
                self._decode(stream, raw, number)
                if self.decode_error is not None:
                    return

    def _remember(self, stream: str, lines: list[bytes]) -> None:
        if stream == "stdout":
            for raw in reversed(lines):
                if raw.strip():
                    self.last_stdout = raw
                    break
        elif stream == "stderr":
            for raw in lines[-STDERR_TAIL:]:
                if raw.strip():
                    self.stderr_tail.append(raw.decode(self.encoding, "replace")[:TAIL_CHARS])

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()
        for stream in STREAMS:
            if self.unlogged[stream]:
                self.ctx.log.warning(
                    "%s: %d more bytes not kept in the log (limit log_max_bytes=%d); all of it is in %s",
                    stream,
                    self.unlogged[stream],
                    self.log_max_bytes or 0,
                    self.path(stream),
                )

    def path(self, stream: str) -> Path:
        """``<attempt folder>/<stream>.log``: every byte the stream carried (written only if there was one)."""
        assert self.folder is not None, "the attempt folder exists once the stream carried a byte"
        return self.folder / f"{stream}.log"
