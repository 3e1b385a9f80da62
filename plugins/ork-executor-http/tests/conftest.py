"""Fixtures: a JobServer on 127.0.0.1 per test, and a project folder pointed at it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from http_harness import HttpProject, stop
from http_test_server import JobServer


@pytest.fixture
def server() -> Iterator[JobServer]:
    with JobServer() as running:
        yield running


@pytest.fixture
def proj(tmp_path: Path, server: JobServer, monkeypatch: pytest.MonkeyPatch) -> HttpProject:
    monkeypatch.delenv("ORK_DB", raising=False)
    folder = tmp_path / "proj"
    folder.mkdir()
    project = HttpProject(folder, server)
    project.configure()
    return project


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; whatever still runs at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            stop(proc)
