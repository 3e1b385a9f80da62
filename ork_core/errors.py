"""Every error ork raises on purpose.

The hierarchy::

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
    ├── RunNotFoundError (LookupError)
    └── TaskError                    raised inside a task; fails that task with this message
        ├── PathError (ValueError)    a path a workflow names is outside the project, or missing
        ├── TaskTimeoutError (TimeoutError)
        └── TaskSkipped              raise to mark the task skipped instead of failed

Each error keeps its context as attributes so callers (and tests) never parse messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


class OrkError(Exception):
    """Base for errors that carry a message meant for a person."""


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


class RunNotFoundError(OrkError, LookupError):
    """Raised when a run id does not exist in the state database."""


class TaskError(OrkError):
    """Raise inside a task to fail it with exactly this message (no traceback is stored)."""


class PathError(TaskError, ValueError):
    """Raised by ``resolve_path`` when a path a workflow names is outside the project folder
    (and the folders ork.yaml allows), or is missing. A TaskError, so a task that meets it
    fails with its message; ``ork validate`` reports it against the workflow field."""

    def __init__(self, reason: str, *, field: str, value: str, resolved: Path, outside: bool) -> None:
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


class TaskSkipped(OrkError):
    """Raise inside a task to mark it skipped; its dependents are skipped too."""


__all__ = [
    "ConfigError",
    "DuplicateExecutorError",
    "ExecutorDefinitionError",
    "ExecutorImportError",
    "OrkError",
    "PathError",
    "PluginError",
    "PluginLoadError",
    "Problem",
    "ProjectError",
    "RunNotFoundError",
    "StorageError",
    "TaskError",
    "TaskSkipped",
    "TaskTimeoutError",
    "UnknownExecutorError",
    "WorkflowError",
]
