"""What a person sees when the database cannot be used: one line, the URL without its password, exit 2."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from pg_cli import ork
from ork_storage_postgres.migrations import SCHEMA_VERSION
from ork_storage_postgres.storage import PostgresStorage


def one_error(err: str) -> str:
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return err


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def test_a_wrong_password(pg_url: str, tmp_path: Path) -> None:
    bad = with_password(pg_url, "not-the-password-4711")
    code, out, err = ork(["runs"], tmp_path, bad)
    assert code == 2, (out, err)
    one_error(err)
    host = urlsplit(pg_url)
    assert f"cannot connect to the state database postgresql://{host.username}:***@127.0.0.1:{host.port}/" in err
    assert "password authentication failed" in err and "check the user and password" in err
    assert "not-the-password-4711" not in err + out


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_server_that_is_not_there(tmp_path: Path, closed_port: int) -> None:
    started = time.monotonic()
    code, out, err = ork(["runs"], tmp_path, f"postgresql://ork:secret-pw-0042@127.0.0.1:{closed_port}/ork")
    assert code == 2, (out, err)
    one_error(err)
    assert f"postgresql://ork:***@127.0.0.1:{closed_port}/ork" in err and "secret-pw-0042" not in err
    assert "Connection refused" in err and f"is PostgreSQL running on 127.0.0.1:{closed_port}" in err
    assert f"pg_isready -h 127.0.0.1 -p {closed_port}" in err and "Is the server running" not in err  # one hint, ours
    assert time.monotonic() - started < 30


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a firewall, a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_a_server_that_does_not_answer_times_out_soon(tmp_path: Path, silent_server: int) -> None:
    started = time.monotonic()
    code, out, err = ork(["runs"], tmp_path, f"postgresql://ork@127.0.0.1:{silent_server}/ork?connect_timeout=2")
    assert code == 2, (out, err)
    one_error(err)
    assert "timeout expired" in err and f"is PostgreSQL running on 127.0.0.1:{silent_server}" in err
    assert time.monotonic() - started < 20


def test_the_default_connect_timeout_is_short() -> None:
    from ork_storage_postgres.connect import CONNECT_TIMEOUT

    assert 1 <= CONNECT_TIMEOUT <= 10


def test_a_database_that_does_not_exist(pg_server: str, tmp_path: Path) -> None:
    url = urlsplit(pg_server)._replace(path="/ork_nowhere").geturl()
    code, out, err = ork(["runs"], tmp_path, url)
    assert code == 2, (out, err)
    one_error(err)
    assert 'database "ork_nowhere" does not exist' in err and "create the database first" in err
    assert (urlsplit(pg_server).password or "") not in err


def test_a_database_of_a_newer_schema_is_refused_untouched(pg_url: str, tmp_path: Path) -> None:
    PostgresStorage(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO ork_schema VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    code, out, err = ork(["runs"], tmp_path, pg_url)
    assert code == 2, (out, err)
    one_error(err)
    assert f"has schema version {SCHEMA_VERSION + 1}, newer than this ork-storage-postgres understands" in err
    assert "pip install -U ork-storage-postgres" in err
    assert ":***@127.0.0.1" in err and (urlsplit(pg_url).password or "") not in err
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT max(version) FROM ork_schema").fetchone() == (SCHEMA_VERSION + 1,)
