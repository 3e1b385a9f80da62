"""What only PostgreSQL has: its migrations and lock, a dropped connection, a read-only database."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import sql

from ork_core.errors import StorageError, StorageWriteError
from ork_core.storage.base import LogLine, NewWork, RunUpdate
from ork_storage_postgres import migrations
from ork_storage_postgres.migrations import LOCK_KEY, SCHEMA_VERSION, migrate
from ork_storage_postgres.storage import PostgresStorage


def stored(url: str) -> PostgresStorage:
    storage = PostgresStorage(url)
    storage.save_workflow("h", "w", "wf.yaml", "", {})
    storage.create_run("r1", "h", "w", "wf.yaml", {}, [("a", "python")], 1.0)
    return storage


def test_every_migration_is_recorded(pg_url: str) -> None:
    PostgresStorage(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT version FROM ork_schema ORDER BY version").fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_a_failing_migration_leaves_the_database_as_it_was(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    PostgresStorage(pg_url).close()
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, "CREATE TABLE half_done (x int); SELECT 1/0;"])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn, target=SCHEMA_VERSION + 1)
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM ork_schema").fetchone() == (SCHEMA_VERSION,)


def test_migrating_waits_for_the_process_that_holds_the_lock(pg_url: str) -> None:
    """An empty database and another process migrating it: this one waits, then finds it done."""
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        opened: list[PostgresStorage] = []
        thread = threading.Thread(target=lambda: opened.append(PostgresStorage(pg_url)))
        thread.start()
        time.sleep(0.7)
        assert thread.is_alive() and not opened  # waiting on the lock, not migrating beside it
        with psycopg.connect(pg_url, autocommit=True) as third:
            assert third.execute("SELECT to_regclass('runs')").fetchone() == (None,)
        other.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        thread.join(30)
    assert opened and opened[0].list_runs() == []
    opened[0].close()


def _terminate_ork_backends(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'ork'"
        ).fetchall()
    return len(rows)


def test_a_connection_dropped_while_idle_is_replaced_before_the_next_write(pg_url: str) -> None:
    """A server restart or a proxy's idle timeout between two scheduler steps costs nothing."""
    storage = stored(pg_url)
    try:
        assert _terminate_ork_backends(pg_url) == 1
        storage.write([RunUpdate("r1", {"status": "running"})], [LogLine("r1", "a", 1, 0.0, "INFO", "log", "x")])
        assert storage.get_run("r1").status == "running" and len(storage.logs("r1")) == 1  # once
        assert _terminate_ork_backends(pg_url) == 1
        assert storage.get_run("r1").status == "running"  # reads too
    finally:
        storage.close()


def test_a_connection_lost_in_the_middle_of_a_batch_fails_it_and_the_next_write_reconnects(pg_url: str) -> None:
    """Whether a batch cut short committed is unknown to the client: it is not sent again, it is reported."""
    storage = stored(pg_url)
    failure: list[BaseException] = []
    try:
        with psycopg.connect(pg_url) as blocker:
            blocker.execute("SELECT 1 FROM runs WHERE id = 'r1' FOR UPDATE")  # the batch waits on this row

            def write() -> None:
                try:
                    storage.write([RunUpdate("r1", {"status": "running"})], [LogLine("r1", "a", 1, 0.0, "INFO", "log", "x")])
                except BaseException as exc:  # noqa: BLE001 - checked below
                    failure.append(exc)

            thread = threading.Thread(target=write)
            thread.start()
            with psycopg.connect(pg_url, autocommit=True) as watcher:  # a fresh view of pg_stat_activity each time
                wait = time.monotonic() + 10
                while True:
                    (waiting,) = watcher.execute(  # type: ignore[misc]
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ork' AND wait_event_type = 'Lock'"
                    ).fetchone()
                    assert waiting or time.monotonic() < wait, "the batch never reached the locked row"
                    if waiting:
                        break
                    time.sleep(0.02)
            assert _terminate_ork_backends(pg_url) == 1
            thread.join(10)
            blocker.rollback()
        (error,) = failure
        assert isinstance(error, StorageWriteError)
        message = str(error)
        assert message.startswith(f"cannot write to the state database {storage.safe_url}: ")
        assert ":***@" in message and (psycopg.conninfo.conninfo_to_dict(pg_url).get("password") or "?") not in message
        assert storage.get_run("r1").status == "pending" and storage.logs("r1") == []  # nothing of the batch
        storage.write([RunUpdate("r1", {"status": "running"})])
        assert storage.get_run("r1").status == "running"
    finally:
        storage.close()


def test_a_read_only_database_refuses_writes_as_storage_write_errors(pg_url: str) -> None:
    """A standby, or a database set read-only: the scheduler gets StorageWriteError and stops resumably."""
    stored(pg_url).close()
    name = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(str(name))))
    storage = PostgresStorage(pg_url)  # a current schema: opening it needs no write
    try:
        with pytest.raises(StorageWriteError) as caught:
            storage.write([RunUpdate("r1", {"status": "running"})])
        assert caught.value.code == "25006" and "read-only transaction" in caught.value.reason
        with pytest.raises(StorageWriteError):
            storage.create_run("r2", "h", "w", "wf.yaml", {}, [("a", "python")], 1.0)
        with pytest.raises(StorageWriteError):
            storage.claim_run("r1", "me", expected=None)
        assert storage.get_run("r1").status == "pending"
    finally:
        storage.close()


def test_an_empty_read_only_database_cannot_be_migrated_and_says_so(pg_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(str(name))))
    with pytest.raises(StorageError, match="cannot migrate the state database .*:\\*\\*\\*@.*read-only"):
        PostgresStorage(pg_url)


def test_the_password_is_masked_once_the_storage_is_open(pg_url: str) -> None:
    from ork_core.secrets import mask

    password = psycopg.conninfo.conninfo_to_dict(pg_url).get("password")
    assert password, "the test server is expected to have a password (scripts/pg-cluster.sh makes one)"
    PostgresStorage(pg_url).close()
    assert mask(f"the server said {password}") == "the server said ***"


def _blocks(conn: psycopg.Connection[tuple[object, ...]], query: str, params: dict[str, object]) -> int:
    (plan,) = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", params).fetchone()  # type: ignore[misc]
    top = plan[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


@pytest.mark.parametrize("compressible", [False, True])
def test_an_excerpt_reads_the_start_of_an_output_not_all_of_it(pg_url: str, compressible: bool) -> None:
    """Measured in the database's own buffer counts: an 8 MB output costs a display a few pages."""
    import json
    import random
    import string

    from ork_core.storage.base import JSONText, TaskUpdate
    from ork_storage_postgres.storage import EXCERPT_QUERY

    rnd = random.Random(7)
    items = ["x" * 1000] * 8000 if compressible else ["".join(rnd.choices(string.ascii_letters, k=1000)) for _ in range(8000)]
    storage = stored(pg_url)
    try:
        storage.write([TaskUpdate("r1", "a", {"output": JSONText(json.dumps(items))})])
        assert storage.get_run("r1", excerpt=100).tasks["a"].output_excerpt == json.dumps(items)[:100]
    finally:
        storage.close()
    with psycopg.connect(pg_url) as conn:
        whole = _blocks(conn, "SELECT length(output) FROM tasks WHERE run_id = %(id)s", {"id": "r1"})
        shown = _blocks(conn, EXCERPT_QUERY, {"id": "r1", "n": 100})
        sent = conn.execute(EXCERPT_QUERY, {"id": "r1", "n": 100}).fetchall()
    assert whole > 10 and shown * 5 < whole, (shown, whole)  # read in the server
    assert [len(row[-1]) for row in sent] == [100] and all(row[8] is None for row in sent)  # sent to ork


def test_claim_runs_skips_a_run_another_claimant_has_locked_instead_of_waiting(pg_url: str) -> None:
    """SKIP LOCKED: a scheduler never queues behind another's claim (a plain FOR UPDATE would wait here)."""
    storage = PostgresStorage(pg_url)
    storage.save_workflow("h", "w", "wf.yaml", "", {})
    for i, run_id in enumerate(["q1", "q2"]):
        storage.create_run(run_id, "h", "w", "wf.yaml", {}, [("a", "python")], 1.0 + i, status="queued")
    result: list[list[str]] = []
    with psycopg.connect(pg_url) as other:
        other.execute("SELECT id FROM runs WHERE id = 'q1' FOR UPDATE")  # a claimant mid-transaction
        worker = threading.Thread(target=lambda: result.append([r.id for r in storage.claim_runs("A", 30.0)]))
        worker.start()
        worker.join(5.0)
        blocked = worker.is_alive()
        other.rollback()
    worker.join()
    storage.close()
    assert not blocked, "claim_runs waited for a row another transaction held"
    assert result == [["q2"]]


def test_an_item_whose_finish_commits_as_its_lease_ends_is_reported_succeeded_or_lost_never_both(pg_url: str) -> None:
    """A worker's finish_work checks the lease, then commits; a poll in between must not call the item lost.

    The scheduler retries a lost attempt, so a poll that read ``running`` (the finish not yet
    committed) and then a clock past the lease would have the task run again after its success.
    Here the finish's transaction is held open past the lease, as a slow commit would be.
    """
    storage = PostgresStorage(pg_url)
    [item] = storage.enqueue_work([NewWork("r", "t", 1, "q", "key-1", {})], 1.0)
    assert [i.id for i in storage.claim_work("w1", ["q"], 0.5, 1)] == [item]
    with psycopg.connect(pg_url) as worker:  # finish_work's statement, its commit delayed
        assert worker.execute(
            "UPDATE work_items SET status = 'success', output = '1' WHERE id = %s AND worker = 'w1'"
            " AND status = 'running' AND lease_until >= extract(epoch FROM clock_timestamp())", (item,)).rowcount == 1
        time.sleep(0.8)  # the lease ends while the commit is in flight
        commit = threading.Timer(0.5, worker.commit)
        commit.start()
        try:
            status = storage.work_status([item])[item].status
        finally:
            commit.join()
    assert (status, storage.work_status([item])[item].status) == ("success", "success")
    storage.close()
