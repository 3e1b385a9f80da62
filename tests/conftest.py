"""Shared fixtures: project folders, the in-process CLI, forgetting imported test modules."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orkhelpers import Cli
from servicehelpers import Schedulers, rows

@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("ORK_DISABLE_PLUGINS", "1")
    monkeypatch.delenv("ORK_DB", raising=False)
    return Cli(monkeypatch)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    return folder


@pytest.fixture
def fresh_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Forget modules a test imported from its tmp folders, so tests do not leak into each other."""
    root = str(tmp_path_factory.getbasetemp().parent)
    before = set(sys.modules)
    path_before = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None) or ""
        if file.startswith(root) or file == "" and name.startswith(("ork_executor_", "acme", "other_mod", "typo", "bad_")):
            del sys.modules[name]
    sys.path[:] = path_before


@pytest.fixture
def schedulers(project: Path) -> Iterator[Schedulers]:
    """`ork scheduler` processes of a test: killed at the end, with every process of their runs."""
    s = Schedulers(project)
    yield s
    s.close()
    from ork_core.proctree import RUN_MARKER, marked_processes, signal_group

    for (run_id,) in rows(project / ".ork" / "ork.db", "SELECT id FROM runs"):
        for _, pgid in (marked_processes({RUN_MARKER: str(run_id)}) or {}).values():
            signal_group(pgid, signal.SIGKILL)
