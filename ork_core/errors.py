"""Every error ork raises on purpose.

The hierarchy::

    StopSignal (SystemExit)          a stop signal before the run loop started: exit 128 + it
    OrkError                         base: the CLI prints its message, never a traceback
    ├── ConfigError (ValueError)     bad input in a file: carries file, field path and line
    │   ├── ProjectError             ork.yaml
    │   └── WorkflowError            a workflow file (may hold several problems)
    ├── PluginError                  a plugin could not be loaded or registered
    │   ├── PluginLoadError          import failed, API version mismatch, bad registration
    │   └── DuplicateExecutorError   two distributions claim one executor type name
    ├── ExecutorDefinitionError (TypeError)   @executor applied to a class of the wrong shape
    ├── UnknownExecutorError (LookupError)    a name that no registration or ork.yaml entry has
    ├── ExecutorImportError (ImportError)     the executor exists but its module cannot import
    ├── StorageError                 the state database cannot be opened or is too new
    │   └── StorageWriteError        a write failed (disk full, I/O error): nothing of it was kept
    ├── RunNotFoundError (LookupError)
    ├── RunClaimedError              another live process executes the run
    └── TaskError                    raised inside a task; fails that task with this message
        ├── PathError (ValueError)    a path a workflow names is outside the project, or missing
        ├── TaskTimeoutError (TimeoutError)
        ├── KickoffUncertain         the submission may have reached the service; no answer came
        └── TaskSkipped              raise to mark the task skipped instead of failed

Each error keeps its context as attributes so callers (and tests) never parse messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


class OrkError(Exception):
    """Base for errors that carry a message meant for a person."""


class StopSignal(SystemExit):
    """Raised by ork's own handler when SIGINT/SIGTERM/SIGHUP comes before the run loop took the signals.

    It ends ork with ``128 +`` the signal, resumably. It may surface anywhere, a plugin's import
    included, and is never that code's failure: whatever catches a plugin's ``SystemExit`` lets
    this one through.
    """


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as ork can."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(OrkError, ValueError):
    """Raised when a configuration file is invalid; lists every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def file(self) -> str:
        return self.problems[0].file if self.problems else ""

    @property
    def path(self) -> str:
        return self.problems[0].path if self.problems else ""

    @property
    def line(self) -> int | None:
        return self.problems[0].line if self.problems else None


class ProjectError(ConfigError):
    """Raised when ork.yaml is invalid: unknown executor type, bad config, missing variable."""


class WorkflowError(ConfigError):
    """Raised when a workflow file is invalid: unknown key, missing dependency, cycle, bad type."""


class PluginError(OrkError):
    """Base for plugin failures; `plugin` is the entry-point (or built-in) name."""

    def __init__(self, message: str, *, plugin: str = "", distribution: str = "", version: str = "") -> None:
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution
        self.version = version


class PluginLoadError(PluginError):
    """Raised (only under ORK_STRICT_PLUGINS=1, or when a workflow uses it) for a quarantined plugin."""


class DuplicateExecutorError(PluginError):
    """Raised when an executor type name is claimed by more than one distribution and none is chosen."""

    def __init__(self, name: str, sources: Sequence[str]) -> None:
        self.name = name
        self.sources = list(sources)
        super().__init__(
            f"executor type {name!r} is registered by more than one plugin: {', '.join(self.sources)}; "
            f"pick one in ork.yaml with 'distribution: <name>' under the executor, or uninstall one"
        )


class ExecutorDefinitionError(OrkError, TypeError):
    """Raised by @executor when the decorated class does not have the executor shape."""


class UnknownExecutorError(OrkError, LookupError):
    """Raised when an executor name or type cannot be found; `suggestions` holds close names."""

    def __init__(self, message: str, *, name: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.suggestions = list(suggestions)


class ExecutorImportError(OrkError, ImportError):
    """Raised when an executor's module exists but fails to import (often a missing dependency)."""


class StorageError(OrkError):
    """Raised when the state database cannot be opened, or was written by a newer ork."""


class StorageWriteError(StorageError):
    """Raised when the state database refuses a write (a full disk, an I/O error).

    The transaction is rolled back, so storage still holds what was committed before it:
    a run that was executing is left resumable. `path` is the database, `reason` the real
    error (``disk full`` for SQLITE_FULL), `code` the backend's error name when it has one.
    `run_id` is set by the scheduler when the run is left unfinished by this error.
    """

    def __init__(self, path: str, reason: str, *, code: str | None = None) -> None:
        super().__init__(f"cannot write to the state database {path}: {reason}")
        self.path = path
        self.reason = reason
        self.code = code
        self.run_id: str | None = None

    def __str__(self) -> str:
        if self.run_id is None:
            return super().__str__()
        return (
            f"{super().__str__()}; run {self.run_id} is left as it was last written: once the database "
            f"can be written again, `ork resume {self.run_id}` continues it"
        )


class RunNotFoundError(OrkError, LookupError):
    """Raised when a run id does not exist in the state database."""


class RunClaimedError(OrkError):
    """Raised when a run is executed by another process that is alive, or that claimed it first.

    `owner` is the other process's owner token (``host/pid/started``; see `ork_core.ownership`),
    or None when it had already released the run again.
    """

    def __init__(self, message: str, *, run_id: str, owner: str | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.owner = owner


class TaskError(OrkError):
    """Raise inside a task to fail it with exactly this message (no traceback is stored)."""


class PathError(TaskError, ValueError):
    """Raised by ``resolve_path`` when a path a workflow names is outside the project folder
    (and the folders ork.yaml allows), or is missing. A TaskError, so a task that meets it
    fails with its message; ``ork validate`` reports it against the workflow field."""

    def __init__(self, reason: str, *, field: str, value: str, resolved: Path | None, outside: bool) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.outside = outside
        """True: refused as outside the allowed folders; False: inside, but missing (or the wrong kind)."""
        self.reason = reason
        """The message without the field, for a caller that shows the field itself."""
        self.field = field
        self.value = value
        self.resolved = resolved


class TaskTimeoutError(TaskError, TimeoutError):
    """The task ran longer than its `timeout`."""


class KickoffUncertain(TaskError):
    """Raise from ``run`` when the submission may have reached the service but its answer did not.

    A client timeout after the request was sent, a connection reset before the response, a
    502/504 from a gateway: the external job may exist. A plain failure would make the retry a
    new try with a new idempotency key, and a second job. For this error ork retries (it
    counts against ``retries`` and waits ``retry_delay`` like any failure) but keeps the try
    number and so the idempotency key, and calls the executor's ``adopt(key, ctx)`` first, as
    ``ork resume`` does for an attempt cut short, so the job that did start is adopted rather
    than submitted again.
    """


class TaskSkipped(OrkError):
    """Raise inside a task to mark it skipped; its dependents are skipped too."""


__all__ = [
    "ConfigError",
    "DuplicateExecutorError",
    "ExecutorDefinitionError",
    "ExecutorImportError",
    "KickoffUncertain",
    "OrkError",
    "PathError",
    "PluginError",
    "PluginLoadError",
    "Problem",
    "ProjectError",
    "RunClaimedError",
    "RunNotFoundError",
    "StorageError",
    "StorageWriteError",
    "TaskError",
    "TaskSkipped",
    "TaskTimeoutError",
    "UnknownExecutorError",
    "WorkflowError",
]
