"""The storage contract (`ork.testing.StorageConformance`) against the built-in SQLite backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from ork.testing import StorageConformance
from ork_core.storage.sqlite import SQLiteStorage


class TestSQLiteConformance(StorageConformance):
    storage_class = SQLiteStorage

    @pytest.fixture(autouse=True)
    def _fresh(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'state' / 'ork.db'}"
