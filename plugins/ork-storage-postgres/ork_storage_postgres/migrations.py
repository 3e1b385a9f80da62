"""The schema, as forward migrations, and applying them once however many processes start.

Each entry of `MIGRATIONS` brings the schema from version i to i + 1; `ork_schema` records
every version applied. They run in one transaction under a transaction-level advisory lock,
so two ork processes starting on an empty database migrate it once (the second waits, then
finds the version current), and a migration that fails leaves the database as it was.

Later needs go in new entries, never by editing a released one (2: the lease of several
schedulers).
"""

from __future__ import annotations

import psycopg

MIGRATIONS: list[str] = [
    # 1: what SQLite reached in its migrations 1-4, in PostgreSQL's types. `seq` columns keep the
    # order rows were written in, which SQLite's rowid gives for free.
    """
    CREATE TABLE workflows (
        hash text PRIMARY KEY, name text NOT NULL, file text NOT NULL, source text NOT NULL,
        compiled text NOT NULL, created_at double precision NOT NULL DEFAULT extract(epoch FROM now())
    );
    CREATE TABLE runs (
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        id text PRIMARY KEY, workflow_hash text NOT NULL REFERENCES workflows(hash),
        workflow_name text NOT NULL, workflow_file text NOT NULL, params text NOT NULL,
        status text NOT NULL, created_at double precision NOT NULL,
        started_at double precision, finished_at double precision, pid integer, error text, owner text,
        triggered_by text NOT NULL DEFAULT 'manual', schedule text, logical_ts bigint, logical_date text,
        interval_start text, interval_end text,
        managed boolean NOT NULL DEFAULT false, cancel_requested boolean NOT NULL DEFAULT false,
        max_active_runs integer
    );
    CREATE UNIQUE INDEX runs_tick ON runs(workflow_name, schedule, logical_ts) WHERE logical_ts IS NOT NULL;
    CREATE INDEX runs_created ON runs(created_at, seq);
    CREATE INDEX runs_unfinished ON runs(created_at) WHERE status NOT IN ('success', 'failed', 'cancelled');
    CREATE INDEX runs_workflow ON runs(workflow_name, created_at);
    CREATE TABLE tasks (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        run_id text NOT NULL REFERENCES runs(id), name text NOT NULL, executor text NOT NULL, status text NOT NULL,
        attempt integer NOT NULL DEFAULT 0, try_number integer NOT NULL DEFAULT 0,
        started_at double precision, finished_at double precision, output text, error text,
        next_try_at double precision, idempotency_key text, tracker text, handle text, link text, external_id text,
        deferred_at double precision, last_poll_at double precision, last_poll_error text,
        poll_failures integer NOT NULL DEFAULT 0, pgid integer,
        uncertain_retries integer NOT NULL DEFAULT 0, adopt_first boolean NOT NULL DEFAULT false,
        PRIMARY KEY (run_id, name)
    );
    CREATE INDEX tasks_deferred ON tasks(deferred_at) WHERE status = 'deferred';
    CREATE TABLE attempts (
        run_id text NOT NULL, task text NOT NULL, attempt integer NOT NULL, try_number integer NOT NULL,
        status text NOT NULL, started_at double precision, finished_at double precision, error text,
        PRIMARY KEY (run_id, task, attempt)
    );
    CREATE TABLE logs (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL, task text NOT NULL, attempt integer NOT NULL, ts double precision NOT NULL,
        level text NOT NULL, stream text NOT NULL, line text NOT NULL
    );
    CREATE INDEX logs_run_task ON logs(run_id, task, seq);
    CREATE TABLE metrics (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL, task text NOT NULL, attempt integer NOT NULL, ts double precision NOT NULL,
        name text NOT NULL, value double precision NOT NULL, labels text NOT NULL
    );
    CREATE INDEX metrics_run ON metrics(run_id, seq);
    CREATE TABLE schedules (
        workflow text NOT NULL, key text NOT NULL, file text NOT NULL, cron text NOT NULL, timezone text NOT NULL,
        catchup boolean NOT NULL, max_active_runs integer, spec text NOT NULL, updated_at double precision NOT NULL,
        PRIMARY KEY (workflow, key)
    );
    CREATE TABLE pauses (workflow text PRIMARY KEY, paused boolean NOT NULL, changed_at double precision NOT NULL);
    """,
    # 2: leases (SQLite's migration 5): `ork scheduler` holds a run as long as it renews its lease
    """
    ALTER TABLE runs ADD COLUMN lease_until double precision;
    """,
    # 3: workers (SQLite's migration 6): attempts of tasks with a `queue:`, and the `ork worker`s running them
    """
    CREATE TABLE work_items (
        id text PRIMARY KEY, run_id text NOT NULL, task text NOT NULL, attempt integer NOT NULL,
        queue text NOT NULL, key text NOT NULL UNIQUE, payload text NOT NULL, status text NOT NULL,
        worker text, lease_until double precision, output text, error text, created_at double precision NOT NULL,
        claimed_at double precision, finished_at double precision, seq bigserial
    );
    CREATE INDEX work_items_queued ON work_items(queue, created_at, seq) WHERE status = 'queued';
    CREATE INDEX work_items_worker ON work_items(worker) WHERE status = 'running';
    CREATE TABLE workers (
        id text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL, queues text NOT NULL,
        started_at double precision NOT NULL, heartbeat_at double precision NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

LOCK_KEY = 0x6F726B_6D6967  # "orkmig": the advisory lock every ork process takes to migrate


class NewerSchema(Exception):
    """The database was migrated by a newer ork-storage-postgres; carries the version found."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def current_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The schema version of the connected database (0: ork has never migrated it)."""
    row = conn.execute("SELECT to_regclass('ork_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM ork_schema").fetchone()
    return int(str(found[0])) if found is not None and found[0] is not None else 0


def migrate(conn: psycopg.Connection[tuple[object, ...]], *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to `target`; returns the version found before. Raises NewerSchema.

    The usual case, a current database, costs two reads and no lock.
    """
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise NewerSchema(version)
    if version >= target:
        return version
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS ork_schema (version integer PRIMARY KEY, applied_at double precision NOT NULL)")
        version = current_version(conn)  # another process may have migrated while this one waited
        if version > SCHEMA_VERSION:
            raise NewerSchema(version)
        for index in range(version, target):
            conn.execute(MIGRATIONS[index].encode())  # several statements: psycopg sends them as one simple query
            conn.execute("INSERT INTO ork_schema VALUES (%s, extract(epoch FROM now()))", (index + 1,))
    return version
