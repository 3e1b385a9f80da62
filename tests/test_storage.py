"""The SQLite backend: location, migrations, refusing what it cannot read."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from orkhelpers import Cli, write
from ork_core.errors import StorageError
from ork_core.storage.sqlite import SCHEMA_VERSION, SQLiteStorage

WF = "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n"


@pytest.fixture
def folder(project: Path, fresh_modules: None) -> Path:
    write(project / "tasks.py", "def f() -> int:\n    return 1\n")
    write(project / "wf.yaml", WF)
    return project


def test_default_location_is_beside_ork_yaml(cli: Cli, folder: Path) -> None:
    write(folder / "ork.yaml", "executors: {}\n")
    sub = folder / "sub"
    sub.mkdir()
    assert cli("run", "../wf.yaml", cwd=sub).code == 0
    assert (folder / ".ork" / "ork.db").is_file()
    assert not (sub / ".ork").exists()


def test_db_flag_and_environment_variable(cli: Cli, folder: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "elsewhere" / "state.db"
    assert cli("--db", f"sqlite:///{explicit}", "run", "wf.yaml", cwd=folder).code == 0
    assert explicit.is_file()
    env_db = tmp_path / "env.db"
    assert cli("run", "wf.yaml", cwd=folder, env={"ORK_DB": f"sqlite:///{env_db}"}).code == 0
    assert env_db.is_file()
    assert not (folder / ".ork" / "ork.db").exists()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ork.db"
    SQLiteStorage(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer than this ork understands"):
        SQLiteStorage(f"sqlite:///{db}")


def test_a_file_that_is_not_a_database_is_refused(cli: Cli, folder: Path) -> None:
    bad = folder / "notes.db"
    bad.write_text("this is not sqlite\n" * 100)
    result = cli("--db", f"sqlite:///{bad}", "runs", cwd=folder)
    assert result.code == 2
    assert "is not an ork state database" in result.err
    assert bad.read_text().startswith("this is not sqlite")


def test_unknown_url_scheme_names_the_available_ones(cli: Cli, folder: Path) -> None:
    result = cli("--db", "postgresql://127.0.0.1/ork", "runs", cwd=folder)
    assert result.code == 2
    assert "unknown storage scheme 'postgresql'" in result.err and "available: sqlite" in result.err


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ork.db'}"
    SQLiteStorage(url).close()
    storage = SQLiteStorage(url)
    assert storage.list_runs() == []
    storage.close()


OPEN_WHEN_TOLD = """
import os, sys, time
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.001)
from ork_core.storage.sqlite import SQLiteStorage
storage = SQLiteStorage(sys.argv[2])
storage.list_runs()
storage.close()
"""


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_first_use_of_a_new_database(tmp_path: Path, round_: int) -> None:
    """Several processes opening one fresh file at the same moment all migrate it, once."""
    import subprocess
    import sys

    db = tmp_path / "fresh" / "ork.db"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_WHEN_TOLD, str(go), f"sqlite:///{db}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(6)
    ]
    try:
        time.sleep(1.0)  # let every interpreter reach the gate (imports are done after it)
        go.touch()
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [code for code, _ in results] == [0] * len(procs), [err for code, err in results if code]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='runs'").fetchone()[0] == 1
