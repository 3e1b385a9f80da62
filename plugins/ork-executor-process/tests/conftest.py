"""Fixtures for the process executor's tests: every test runs real processes, and cleans up."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ork_core.proctree import signal_group


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder; any process group a test wrote to ``<project>/pgid*`` is killed afterwards."""
    yield tmp_path
    for marker in tmp_path.glob("pgid*"):
        text = marker.read_text().strip()
        if text.isdigit():
            signal_group(int(text), signal.SIGKILL)
