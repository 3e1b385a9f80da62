"""ork finds the backend through its entry point, for both schemes, without importing psycopg at start-up."""

from __future__ import annotations

import pytest

from ork_core.plugins import build_plugin_manager
from ork_core.testkit.probe import check_registration, probe, registration_entry


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_the_installed_plugin_registers_the_scheme(scheme: str) -> None:
    pm = build_plugin_manager({"ORK_STRICT_PLUGINS": "1"})
    reg = pm.registry.get("storage", scheme)
    assert reg.target_path == "ork_storage_postgres.storage:PostgresStorage"
    assert reg.source.distribution == "ork-storage-postgres"
    entry = registration_entry(reg)
    assert entry is not None
    check_registration(reg, *entry)
    assert not [m for m in probe(entry[0]).new_modules if m.startswith("psycopg")]


def test_open_storage_reaches_the_backend(pg_url: str) -> None:
    from ork_core.storage import open_storage
    from ork_storage_postgres.storage import PostgresStorage

    pm = build_plugin_manager({})
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        storage = open_storage(url, pm.registry)
        try:
            assert isinstance(storage, PostgresStorage) and storage.list_runs() == []
        finally:
            storage.close()
