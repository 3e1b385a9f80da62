"""Opening the connection, and saying in one line why it could not be opened.

libpq's own message is kept (it names the host, port and user, never the password), with
the URL shown without its password and what to do about the usual causes: a wrong
password, a server that is not there, a database not created yet.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg.conninfo import make_conninfo

from ork_core.errors import StorageError
from ork_core.secrets import mask, strip_password

CONNECT_TIMEOUT = 5
"""Seconds to wait for the server (libpq waits forever by default); ``?connect_timeout=`` overrides it."""


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection: every transaction is opened explicitly with ``conn.transaction()``."""
    try:
        timeout = {} if "connect_timeout" in _query(url) else {"connect_timeout": CONNECT_TIMEOUT}
        conninfo = make_conninfo(url, application_name="ork", **timeout)
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise StorageError(connect_message(url, exc)) from None


def _query(url: str) -> dict[str, list[str]]:
    try:
        return parse_qs(urlsplit(url).query)
    except ValueError:
        return {}


def _where(url: str) -> tuple[str, int | str]:
    try:
        parts = urlsplit(url)
        return parts.hostname or "localhost", parts.port or 5432
    except ValueError:
        return "HOST", "PORT"


def connect_message(url: str, exc: BaseException) -> str:
    """`exc` from connecting, as one line: the URL without its password, the cause, what to do."""
    # libpq's first line is the cause; the lines after it are its own hint, which ours replaces
    detail = " ".join(str(exc).strip().splitlines()[0].split()) if str(exc).strip() else type(exc).__name__
    detail = detail.removeprefix("connection failed: ")
    lowered = detail.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        hint = "check the user and password in the URL (or in ~/.pgpass)"
    elif "does not exist" in lowered and "database" in lowered:
        hint = "create the database first (createdb, or CREATE DATABASE), then start ork again"
    elif "connection refused" in lowered or "timeout expired" in lowered or "could not translate host name" in lowered:
        host, port = _where(url)
        hint = f"is PostgreSQL running on {host}:{port}, and reachable from here? (pg_isready -h {host} -p {port})"
    elif "role" in lowered and "does not exist" in lowered:
        hint = "create the role (createuser), or use another user in the URL"
    else:
        hint = "check the URL (--db, ORK_DB or storage: in ork.yaml)"
    return f"cannot connect to the state database {strip_password(url)}: {mask(detail)}; {hint}"
