"""Registration only: the schemes and a lazy target, so start-up never imports psycopg."""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_storage(register: Register) -> None:
    register("postgresql", "ork_storage_postgres.storage:PostgresStorage")
    register("postgres", "ork_storage_postgres.storage:PostgresStorage")
