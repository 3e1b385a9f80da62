"""The storage contract every backend keeps (`ork.testing.StorageConformance`), on PostgreSQL."""

from __future__ import annotations

import pytest

from ork.testing import StorageConformance
from ork_storage_postgres.storage import PostgresStorage


class TestPostgresConformance(StorageConformance):
    storage_class = PostgresStorage

    @pytest.fixture(autouse=True)
    def _fresh(self, pg_url: str) -> None:
        self.url = pg_url
