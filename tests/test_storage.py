"""The SQLite backend: location, migrations, refusing what it cannot read.

What every backend promises (claims, ticks, batches, readers) is `StorageConformance`, run
against SQLite in test_storage_conformance.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orkhelpers import Cli, ork_subprocess, write
from ork_core.errors import StorageError
from ork_core.storage.base import NewWork
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


def _stored_run(storage: SQLiteStorage, run_id: str = "r1", owner: str | None = None) -> None:
    storage.save_workflow("h", "w", "wf.yaml", WF, {})
    storage.create_run(run_id, "h", "w", "wf.yaml", {}, [("a", "python")], 0.0, owner=owner)


def test_an_unfinished_run_of_an_older_ork_is_owned_by_its_pid(tmp_path: Path) -> None:
    """Migration 2 adds the owner; a run that was executing keeps the pid check it had."""
    from ork_core.storage.sqlite import _MIGRATIONS

    db = tmp_path / "ork.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(_MIGRATIONS[0])
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO workflows(hash, name, file, source, compiled) VALUES ('h','w','f','s','{}')")
        for run_id, status in (("live", "running"), ("done", "success")):
            conn.execute(
                "INSERT INTO runs(id, workflow_hash, workflow_name, workflow_file, params, status, created_at, pid)"
                " VALUES (?, 'h', 'w', 'f', '{}', ?, 0, 4242)",
                (run_id, status),
            )
    storage = SQLiteStorage(f"sqlite:///{db}")
    try:
        assert storage.get_run("live").owner == "/4242/"
        assert storage.get_run("done").owner is None
    finally:
        storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_full_database_keeps_the_real_error_and_stays_usable(tmp_path: Path) -> None:
    """SQLITE_FULL (here from max_page_count) is reported as a full disk, with the path; nothing half-written."""
    from ork_core.errors import StorageWriteError
    from ork_core.storage.base import LogLine, RunUpdate

    db = tmp_path / "ork.db"
    storage = SQLiteStorage(f"sqlite:///{db}")
    try:
        _stored_run(storage)
        pages = storage._db.execute("PRAGMA page_count").fetchone()[0]
        storage._db.execute(f"PRAGMA max_page_count={pages + 2}")
        lines = [LogLine("r1", "a", 1, 0.0, "INFO", "log", "x" * 500) for _ in range(200)]
        with pytest.raises(StorageWriteError) as caught:
            storage.write([RunUpdate("r1", {"status": "running"})], lines)
        error = caught.value
        assert error.code == "SQLITE_FULL" and error.path == str(db)
        assert str(error).startswith(f"cannot write to the state database {db}: disk full")
        assert "rollback" not in str(error)
        assert not storage._db.in_transaction
        assert storage.get_run("r1").status == "pending" and storage.logs("r1") == []  # all or nothing
        with pytest.raises(StorageWriteError, match="disk full"):
            storage.create_run("r2", "h", "w", "wf.yaml", {}, [(f"t{i}" * 20, "python") for i in range(1000)], 0.0)
        storage._db.execute("PRAGMA max_page_count=1000000")  # space again: the same batch goes in
        storage.write([RunUpdate("r1", {"status": "running"})], lines)
        assert storage.get_run("r1").status == "running" and len(storage.logs("r1")) == 200
    finally:
        storage.close()


NOISY = '''
import os
from ork import Context

def noisy(ctx: Context, marker: str) -> int:
    """Logs 6 MB the first time (more than the disk holds), ten lines after that."""
    first = not os.path.exists(marker)
    open(marker, "a").close()
    for i in range(20000 if first else 10):
        ctx.log.info("line %d %s", i, "x" * 300)
    return 1
'''


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for the test and unmounted after it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command here; test_a_full_database_keeps_the_real_error_and_stays_usable covers SQLITE_FULL")
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}); "
            "test_a_full_database_keeps_the_real_error_and_stays_usable covers SQLITE_FULL"
        )
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _ork(args: list[str], cwd: Path) -> tuple[int, str, str]:
    proc = ork_subprocess(args, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def _one_message(err: str, db: Path) -> None:
    assert err.count("error:") == 1 and "Traceback" not in err and "rollback" not in err, err
    assert f"cannot write to the state database {db}: disk full" in err, err


def test_a_full_disk_stops_the_run_resumably_and_resume_finishes_it(project: Path, small_disk: Path) -> None:
    """Log lines flushed from the task's thread, then create_run, on a real full disk; then space, and resume."""
    write(project / "tasks.py", NOISY)
    write(project / "wf.yaml", f"""
        name: noisy
        tasks:
          a: {{file: tasks.py, function: noisy, inputs: {{marker: "{project / 'a.marker'}"}}}}
          b: {{file: tasks.py, function: noisy, depends_on: [a], inputs: {{marker: "{project / 'b.marker'}"}}}}
        """)
    db = small_disk / "ork.db"
    code, out, err = _ork(["--db", f"sqlite:///{db}", "run", "wf.yaml"], project)
    assert code == 2, (out, err)
    _one_message(err, db)
    run_id = out.split()[1]
    assert f"ork resume {run_id}" in err
    with sqlite3.connect(db) as conn:
        # not failed: ork could not write, the task did nothing wrong; and the run is not final
        assert conn.execute("SELECT name, status, error FROM tasks ORDER BY name").fetchall() == [
            ("a", "running", None), ("b", "pending", None),
        ]
        assert conn.execute("SELECT id, status FROM runs").fetchall() == [(run_id, "running")]

    # a new run whose workflow snapshot and parameters are larger than the whole disk cannot be created
    (project / "big.yaml").write_text(
        (project / "wf.yaml").read_text().replace("name: noisy", f"name: big\nparams: {{pad: {'p' * 1_200_000}}}")
    )
    code, out, err = _ork(["--db", f"sqlite:///{db}", "run", "big.yaml"], project)
    assert code == 2, (out, err)
    _one_message(err, db)
    assert "run " not in out  # no run was created, so none was announced

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    code, out, err = _ork(["--db", f"sqlite:///{db}", "resume", run_id], project)
    assert code == 0, (out, err)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, status FROM tasks ORDER BY name").fetchall() == [("a", "success"), ("b", "success")]
        assert conn.execute("SELECT id, status, owner FROM runs").fetchall() == [(run_id, "success", None)]


def test_a_run_that_has_not_finished_has_no_duration() -> None:
    """`ork runs` shows '-' for a running or stopped run, not a duration of 0.00s."""
    from ork_core.storage.base import RunRecord

    started = RunRecord(id="r", workflow_hash="h", workflow_name="w", workflow_file="wf.yaml", params={},
                        status="stopped", created_at=1.0, started_at=2.0, finished_at=None, pid=None, error=None)
    assert started.duration is None
    assert RunRecord(**{**started.__dict__, "status": "success", "finished_at": 5.5}).duration == 3.5


def test_an_item_whose_finish_commits_as_its_lease_ends_is_reported_succeeded_or_lost_never_both(tmp_path: Path) -> None:
    """A worker's finish_work checks the lease, then commits; a poll in between must not call the item lost.

    (The scheduler retries a lost attempt: the task would run again after its success.) The
    finish's transaction is held open past the lease here, as a slow commit would be.
    """
    import threading

    storage = SQLiteStorage(f"sqlite:///{tmp_path / 'ork.db'}")
    [item] = storage.enqueue_work([NewWork("r", "t", 1, "q", "key-1", {})], 1.0)
    assert [i.id for i in storage.claim_work("w1", ["q"], 0.5, 1)] == [item]
    worker = sqlite3.connect(tmp_path / "ork.db", isolation_level=None, timeout=30, check_same_thread=False)
    worker.execute("BEGIN IMMEDIATE")
    assert worker.execute("UPDATE work_items SET status='success', output='1' WHERE id=? AND worker='w1'"
                          " AND status='running' AND lease_until >= ?", (item, time.time())).rowcount == 1
    time.sleep(0.8)  # the lease ends while the commit is in flight
    commit = threading.Timer(0.5, worker.execute, ("COMMIT",))
    commit.start()
    try:
        status = storage.work_status([item])[item].status
    finally:
        commit.join()
        worker.close()
    assert (status, storage.work_status([item])[item].status) == ("success", "success")
    storage.close()
