"""One PostgreSQL server for the session (``ORK_TEST_PG``), a fresh database for each test.

``scripts/pg-cluster.sh start`` makes a throwaway server and prints the variable to export;
``.ci/run`` and ``scripts/test.sh`` do that themselves. Without ``ORK_TEST_PG`` these tests
skip, except under ``CI=true``, where a missing server is a failure: CI must run them.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)  # pg_cli, beside this file


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of the test server (its maintenance database), from ORK_TEST_PG."""
    url = os.environ.get("ORK_TEST_PG")
    if not url:
        reason = "ORK_TEST_PG is not set: start a server with `eval \"$(bash scripts/pg-cluster.sh start)\"`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)
    host = urlsplit(url).hostname
    assert host == "127.0.0.1", f"the tests only target 127.0.0.1, not {host}"
    return url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A new, empty database for this test, dropped after it (with whatever still holds it)."""
    name = f"ork_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
