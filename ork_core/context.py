"""What a task sees of ork while it runs: its identity, a logger, metrics, parameters.

Log lines and metrics go to a `TaskSink` (storage in a real run, a list in `ork.testing`),
tagged with run, task and attempt, so `ork logs RUN --task T` shows exactly that task's lines.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator

MAX_LOG_LINE = 64 * 1024
"""Characters of one log line that are kept; the rest is cut off with a note saying how much.

Log lines are stored with the run and printed by `ork logs`: a task that logs a 100 MB
string must not cost ork (or the database) 100 MB per copy. The process executor cuts
lines to ``max_line_bytes`` (also 64 KiB) before they get here."""
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits on


def cap_line(line: str, limit: int = MAX_LOG_LINE) -> str:
    """`line`, cut to `limit` characters with a note when longer."""
    return line if len(line) <= limit else _cut(line, 0, len(line), limit)


def _capped_lines(text: str, limit: int = MAX_LOG_LINE) -> Iterator[str]:
    """``text.splitlines()``, each line capped, without ever copying more than `limit` characters of one."""
    if len(text) <= limit:
        yield from text.splitlines() or [""]
        return
    start = 0
    for match in _LINE_BREAK.finditer(text):
        yield _cut(text, start, match.start(), limit)
        start = match.end()
    if start < len(text):
        yield _cut(text, start, len(text), limit)


def _cut(text: str, start: int, end: int, limit: int) -> str:
    if end - start <= limit:
        return text[start:end]
    return f"{text[start:start + limit]}… [{end - start - limit:,} more characters not kept]"


class TaskSink(Protocol):
    """Receives a task's log lines and metrics; implementations must be thread-safe."""

    def log(self, run_id: str, task: str, attempt: int, ts: float, level: str, stream: str, line: str) -> None: ...

    def metric(
        self, run_id: str, task: str, attempt: int, ts: float, name: str, value: float, labels: Mapping[str, str]
    ) -> None: ...


@dataclass
class MemorySink:
    """A sink that keeps everything in memory: for tests and in-process runs."""

    lines: list[tuple[str, str, int, float, str, str, str]] = field(default_factory=list)
    metrics: list[tuple[str, str, int, float, str, float, dict[str, str]]] = field(default_factory=list)

    def log(self, run_id: str, task: str, attempt: int, ts: float, level: str, stream: str, line: str) -> None:
        self.lines.append((run_id, task, attempt, ts, level, stream, line))

    def metric(
        self, run_id: str, task: str, attempt: int, ts: float, name: str, value: float, labels: Mapping[str, str]
    ) -> None:
        self.metrics.append((run_id, task, attempt, ts, name, value, dict(labels)))


class TaskLogger:
    """A logger whose lines belong to one task attempt; the `logging.Logger` methods people use."""

    def __init__(self, sink: TaskSink, run_id: str, task: str, attempt: int, echo: logging.Logger | None = None) -> None:
        self._sink = sink
        self._ids = (run_id, task, attempt)
        self._echo = echo

    def _emit(self, level: str, msg: object, args: tuple[object, ...], stream: str = "log") -> None:
        text = str(msg) % args if args else str(msg)
        run_id, task, attempt = self._ids
        for line in _capped_lines(text):
            self._sink.log(run_id, task, attempt, time.time(), level, stream, line)
        if self._echo is not None:
            self._echo.log(logging.getLevelName(level), "[%s] %s", task, text)

    def debug(self, msg: object, *args: object) -> None:
        self._emit("DEBUG", msg, args)

    def info(self, msg: object, *args: object) -> None:
        self._emit("INFO", msg, args)

    def warning(self, msg: object, *args: object) -> None:
        self._emit("WARNING", msg, args)

    def error(self, msg: object, *args: object) -> None:
        self._emit("ERROR", msg, args)

    def exception(self, msg: object, *args: object) -> None:
        self._emit("ERROR", f"{msg}\n{traceback.format_exc()}", args)

    def line(self, stream: str, text: str) -> None:
        """Record one line of a child process's stdout or stderr."""
        run_id, task, attempt = self._ids
        self._sink.log(run_id, task, attempt, time.time(), "INFO", stream, cap_line(text))


class Metrics:
    """``ctx.metrics.record(name, value, labels={})``: numbers kept with the task attempt."""

    def __init__(self, sink: TaskSink, run_id: str, task: str, attempt: int) -> None:
        self._sink = sink
        self._ids = (run_id, task, attempt)

    def record(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"metric {name!r}: value must be a number, not {type(value).__name__}")
        run_id, task, attempt = self._ids
        clean = {str(k): str(v) for k, v in (labels or {}).items()}
        self._sink.metric(run_id, task, attempt, time.time(), name, float(value), clean)


_EVENT_LOCK = threading.Lock()
_KEY_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def make_idempotency_key(run_id: str, task_name: str, try_number: int) -> str:
    """A key that is stable across crashes and changes per real retry.

    Lower-case letters, digits, '-' and '_' only and at most 63 characters, so it is
    valid as a BigQuery job id, a Cloud Run label value and an HTTP header alike.
    """
    task = _KEY_UNSAFE.sub("-", task_name.lower()).strip("-") or "task"
    run = _KEY_UNSAFE.sub("-", run_id.lower())
    key = f"ork-{run}-{task}-t{try_number}"
    if len(key) > 63:
        import hashlib

        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        key = f"ork-{run[:20]}-{task[:20]}-{digest}-t{try_number}"[:63]
    return key


RUN_VALUES = ("logical_date", "interval_start", "interval_end", "trigger", "run_id")
"""What ``{run: …}`` may name, and the run's part of a template's ``ork.`` variables."""


@dataclass
class Context:
    """Everything a task attempt knows about where it runs. Passed as ``ctx`` to ``run``."""

    task_name: str
    workflow_name: str
    run_id: str
    attempt: int
    log: TaskLogger
    metrics: Metrics
    params: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)
    """The task's executor-specific keys from the workflow file."""
    config_file: str = ""
    """The task's ``config_file`` (absolute path, or ""), for methods that get no ``config_file`` argument (``adopt``)."""
    idempotency_key: str = ""
    try_number: int = 1
    env: dict[str, str] = field(default_factory=dict)
    """The task's ``env`` from the workflow file."""
    workflow_dir: Path = field(default_factory=Path.cwd)
    project_dir: Path = field(default_factory=Path.cwd)
    allowed_path_roots: tuple[Path, ...] = ()
    """Folders outside the project that ork.yaml's ``allowed_path_roots`` lets workflow paths point into."""
    artifact_dir: Path | None = None
    timeout: float | None = None
    executor_name: str = ""
    record_process_group: Callable[[int | None], None] = field(default=lambda pgid: None, repr=False)
    """Commit the process group a task started (None when it ended), so `ork resume` can end it."""
    _cancel_event: threading.Event | None = field(default=None, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    trigger: str = "manual"
    """Why the run exists: ``manual`` (``ork run``, ``ork trigger``), ``schedule`` (a tick) or ``backfill``."""
    logical_date: str | None = None
    """The tick the run stands for (ISO 8601, in its schedule's time zone); for a run with no
    tick, when the run was created (UTC), so a task can always name its output by it."""
    interval_start: str | None = None
    """The start of the interval the tick covers (the tick before it); None for a run with no tick."""
    interval_end: str | None = None
    """The end of that interval (the tick itself); None for a run with no tick."""

    def run_values(self) -> dict[str, str | None]:
        """What ``{run: …}`` bindings resolve to (`RUN_VALUES`)."""
        return {
            "logical_date": self.logical_date, "interval_start": self.interval_start,
            "interval_end": self.interval_end, "trigger": self.trigger, "run_id": self.run_id,
        }

    @property
    def task_id(self) -> str:
        return f"{self.run_id}/{self.task_name}"

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the task is cancelled or timed out; a long sync ``run`` may wait on it.

        Created on first use: most tasks never look at it, and an Event is not free.
        """
        if self._cancel_event is None:
            with _EVENT_LOCK:
                if self._cancel_event is None:
                    self._cancel_event = threading.Event()
        return self._cancel_event

    @property
    def cancelled(self) -> bool:
        return self._cancel_event is not None and self._cancel_event.is_set()

    def ensure_artifact_dir(self) -> Path:
        """The folder for this attempt's files, created on first use."""
        if self.artifact_dir is None:
            self.artifact_dir = self.project_dir / ".ork" / "artifacts" / self.run_id / self.task_name / str(self.attempt)
        from ork_core.secrets import private_dir

        return private_dir(self.artifact_dir)  # owner-only, as all of .ork/

    def ensure_scratch_dir(self) -> Path:
        """This ork process's private folder for files needed only while it runs (mode 0700).

        ``.ork/tmp/<pid>-<start time>/`` in the project, shared by every task of the process:
        name files by run, task and attempt. Removed when ork exits normally, and by the next
        ork that starts in the project when this one was killed (see `ork_core.scratch`).
        """
        from ork_core.scratch import scratch_dir

        return scratch_dir(self.project_dir)

    def resolve(self, path: str | Path) -> Path:
        """A path from the workflow, relative to the workflow file's folder (not checked: see `resolve_path`)."""
        p = Path(path)
        return p if p.is_absolute() else (self.workflow_dir / p)

    def resolve_path(
        self,
        raw: str | Path,
        *,
        field: str,
        relative_to: Path | Sequence[Path] | None = None,
        must_exist: Literal["file", "dir"] | None = None,
    ) -> Path:
        """A path the workflow names, resolved and confined to the project (ork's one rule for paths).

        Relative to the workflow's folder unless `relative_to` says otherwise; symlinks are
        followed; outside the project (and ``allowed_path_roots``) raises PathError naming
        `field` (e.g. ``tasks.load.file``), the value, where it resolves and the opt-out.
        """
        from ork_core.paths import resolve_path

        return resolve_path(
            raw,
            field=field,
            relative_to=self.workflow_dir if relative_to is None else relative_to,
            project_dir=self.project_dir,
            allowed_roots=self.allowed_path_roots,
            must_exist=must_exist,
        )


def ork_variables(ctx: Context) -> dict[str, Any]:
    """The ``ork.`` variables of every executor's templates: what the run and the attempt are.

    One function, so ``{{ ork.logical_date }}`` means the same in an HTTP body, a SQL file
    and a process's arguments; here, not in `ork_core.templating`, so building them imports
    no Jinja for a task without templates.
    """
    return {
        "run_id": ctx.run_id,
        "task": ctx.task_name,
        "workflow": ctx.workflow_name,
        "try_number": ctx.try_number,
        "idempotency_key": ctx.idempotency_key,
        "trigger": ctx.trigger,
        "logical_date": ctx.logical_date,
        "interval_start": ctx.interval_start,
        "interval_end": ctx.interval_end,
    }
