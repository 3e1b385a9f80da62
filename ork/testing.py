"""Test an executor the way ork runs it, and check that it behaves like ork's own.

For plugin authors; six names:

- `run_task` runs one task of your executor through ork's real scheduler, with a SQLite
  state database in a temporary folder, and returns a `TaskResult` (status, output, error,
  log lines). Upstream outputs and run parameters can be given.
- `ExecutorConformance` is a base class for a pytest class in your package. Point it at
  your executor and give it a config and a task; it checks the contract, the config
  round-trip, that registering the plugin stays cheap, a real run, a timeout, a cancel,
  and, for executors that hand jobs over with ``Deferred``, that ``ork resume`` after a crash
  adopts the submitted job instead of submitting it again.
- `plugin_manager` builds a fresh plugin manager with inline plugin objects registered;
  `inline_plugin` makes such an object from executor (and job tracker) classes.
- `TaskResult` is what `run_task` returns.
- `StorageConformance` is the same idea for a storage backend: a base class whose checks
  cover every method of the storage contract, claims and per-tick races included, against
  a fresh database your fixture provides. ork's SQLite backend runs it too.

Nothing here is global: every call builds its own plugin manager, project folder and
database, and ignores the caller's ``ORK_*`` variables, so tests stay independent and run in
any order. ``docs/testing.md`` shows each name in use; its snippets come from ork's tests.
"""

from __future__ import annotations

from ork_core.testkit.conformance import ExecutorConformance
from ork_core.testkit.harness import TaskResult, inline_plugin, plugin_manager, run_task
from ork_core.testkit.storage_conformance import StorageConformance

__all__ = ["ExecutorConformance", "StorageConformance", "TaskResult", "inline_plugin", "plugin_manager", "run_task"]
