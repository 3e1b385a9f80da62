"""ork: the public API. Everything a workflow author or plugin author imports is here;
the implementation lives in `ork_core` and may move without notice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ork_core.context import Context, Metrics, TaskLogger
from ork_core.deferred import Deferred, JobState, JobStatus, JobTracker, poll_each
from ork_core.errors import (
    ConfigError,
    DuplicateExecutorError,
    ExecutorDefinitionError,
    ExecutorImportError,
    KickoffUncertain,
    OrkError,
    PathError,
    PluginError,
    PluginLoadError,
    Problem,
    ProjectError,
    RunNotFoundError,
    StorageError,
    TaskError,
    TaskSkipped,
    TaskTimeoutError,
    UnknownExecutorError,
    WorkflowError,
)
from ork_core.executors import ExecutorSpec, executor
from ork_core.hookspecs import hookimpl, hookspec
from ork_core.paths import resolve_path
from ork_core.plugins import PLUGIN_API_VERSION
from ork_core.registry import Register
from ork_core.secrets import mask as mask_secrets
from ork_core.secrets import register as register_secret

if TYPE_CHECKING:
    from ork_core.checks import TaskWhere
    from ork_core.taskconfig import load_task_config
    from ork_core.templating import render

# Imported on first use: they pull in Jinja2 and YAML, which a plugin's registration
# module (`from ork import hookimpl`) should not pay for.
_LAZY = {"load_task_config": "ork_core.taskconfig", "render": "ork_core.templating", "TaskWhere": "ork_core.checks"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ork' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__version__ = "0.1.0"

__all__ = [
    "PLUGIN_API_VERSION",
    "ConfigError",
    "Context",
    "Deferred",
    "DuplicateExecutorError",
    "ExecutorDefinitionError",
    "ExecutorImportError",
    "ExecutorSpec",
    "JobState",
    "JobStatus",
    "JobTracker",
    "KickoffUncertain",
    "Metrics",
    "OrkError",
    "PathError",
    "PluginError",
    "PluginLoadError",
    "Problem",
    "ProjectError",
    "Register",
    "RunNotFoundError",
    "StorageError",
    "TaskError",
    "TaskLogger",
    "TaskSkipped",
    "TaskTimeoutError",
    "TaskWhere",
    "UnknownExecutorError",
    "WorkflowError",
    "__version__",
    "executor",
    "hookimpl",
    "hookspec",
    "load_task_config",
    "mask_secrets",
    "poll_each",
    "register_secret",
    "render",
    "resolve_path",
]
