"""The embedded default backend: one SQLite file in WAL mode.

WAL with ``synchronous=NORMAL`` survives the ork process being killed at any point (what
`ork resume` relies on); only a power loss can drop the last commits. Set
``ORK_SQLITE_SYNC=FULL`` to trade speed for that too. Migrations run forward from
``PRAGMA user_version``; a database from a newer ork is refused instead of being damaged.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ork_core.errors import RunNotFoundError, StorageError, StorageWriteError
from ork_core.secrets import private_dir, private_file
from ork_core.storage.base import (
    RUN_FIELDS,
    TASK_FIELDS,
    AttemptRecord,
    JSONText,
    LOST,
    QUEUED,
    LogLine,
    Metric,
    NewWork,
    PauseState,
    RunOrigin,
    RunRecord,
    ScheduleRecord,
    RunUpdate,
    Storage,
    TaskRecord,
    TaskUpdate,
    WorkerRecord,
    WorkItem,
    WorkOutcome,
    check_outcomes,
    batch_runs,
    fence_error,
)

_MIGRATIONS: list[str] = [
    """
    CREATE TABLE workflows (
        hash TEXT PRIMARY KEY, name TEXT NOT NULL, file TEXT NOT NULL, source TEXT NOT NULL,
        compiled TEXT NOT NULL, created_at REAL DEFAULT (strftime('%s','now'))
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, workflow_hash TEXT NOT NULL REFERENCES workflows(hash),
        workflow_name TEXT NOT NULL, workflow_file TEXT NOT NULL, params TEXT NOT NULL,
        status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        pid INTEGER, error TEXT
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE TABLE tasks (
        run_id TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, executor TEXT NOT NULL,
        status TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, try_number INTEGER NOT NULL DEFAULT 0,
        started_at REAL, finished_at REAL, output TEXT, error TEXT, next_try_at REAL,
        idempotency_key TEXT, tracker TEXT, handle TEXT, link TEXT, external_id TEXT,
        deferred_at REAL, last_poll_at REAL, last_poll_error TEXT, poll_failures INTEGER NOT NULL DEFAULT 0,
        pgid INTEGER,
        PRIMARY KEY (run_id, name)
    );
    CREATE INDEX tasks_deferred ON tasks(status) WHERE status = 'deferred';
    CREATE TABLE attempts (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, try_number INTEGER NOT NULL,
        status TEXT NOT NULL, started_at REAL, finished_at REAL, error TEXT,
        PRIMARY KEY (run_id, task, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, ts REAL NOT NULL,
        level TEXT NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL
    );
    CREATE INDEX logs_run_task ON logs(run_id, task);
    CREATE TABLE metrics (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, ts REAL NOT NULL,
        name TEXT NOT NULL, value REAL NOT NULL, labels TEXT NOT NULL
    );
    CREATE INDEX metrics_run ON metrics(run_id);
    """,
    # 2: the run's owner (see ork_core.ownership). A run left unfinished by an older ork is
    # owned by its recorded pid on an unknown host, which is what that ork checked.
    """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    UPDATE runs SET owner = '/' || pid || '/'
        WHERE pid IS NOT NULL AND status NOT IN ('success', 'failed', 'cancelled');
    """,
    # 3: KickoffUncertain: a retry that keeps its try, and the adopt it owes, survive a crash
    """
    ALTER TABLE tasks ADD COLUMN uncertain_retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN adopt_first INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: schedules. One run per (workflow, schedule, tick) is the unique index, not a check.
    """
    ALTER TABLE runs ADD COLUMN triggered_by TEXT NOT NULL DEFAULT 'manual';
    ALTER TABLE runs ADD COLUMN schedule TEXT;
    ALTER TABLE runs ADD COLUMN logical_ts INTEGER;
    ALTER TABLE runs ADD COLUMN logical_date TEXT;
    ALTER TABLE runs ADD COLUMN interval_start TEXT;
    ALTER TABLE runs ADD COLUMN interval_end TEXT;
    ALTER TABLE runs ADD COLUMN managed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN max_active_runs INTEGER;
    CREATE UNIQUE INDEX runs_tick ON runs(workflow_name, schedule, logical_ts) WHERE logical_ts IS NOT NULL;
    CREATE INDEX runs_unfinished ON runs(created_at) WHERE status NOT IN ('success', 'failed', 'cancelled');
    CREATE INDEX runs_workflow ON runs(workflow_name, created_at);
    CREATE TABLE schedules (
        workflow TEXT NOT NULL, key TEXT NOT NULL, file TEXT NOT NULL, cron TEXT NOT NULL, timezone TEXT NOT NULL,
        catchup INTEGER NOT NULL, max_active_runs INTEGER, spec TEXT NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (workflow, key)
    );
    CREATE TABLE pauses (workflow TEXT PRIMARY KEY, paused INTEGER NOT NULL, changed_at REAL NOT NULL);
    """,
    # 5: leases: `ork scheduler` holds a run only as long as it keeps renewing its lease
    """
    ALTER TABLE runs ADD COLUMN lease_until REAL;
    """,
    # 6: workers: the attempts of tasks with a `queue:`, and the `ork worker` processes that run them
    """
    CREATE TABLE work_items (
        id TEXT PRIMARY KEY, run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL,
        queue TEXT NOT NULL, key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, status TEXT NOT NULL,
        worker TEXT, lease_until REAL, output TEXT, error TEXT, created_at REAL NOT NULL,
        claimed_at REAL, finished_at REAL
    );
    CREATE INDEX work_items_queued ON work_items(queue, created_at) WHERE status = 'queued';
    CREATE INDEX work_items_worker ON work_items(worker) WHERE status = 'running';
    CREATE TABLE workers (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, queues TEXT NOT NULL,
        started_at REAL NOT NULL, heartbeat_at REAL NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path."""
    if "://" not in url:
        return Path(url)
    if not url.startswith("sqlite:///"):
        raise StorageError(f"{url!r} is not a sqlite URL; write sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return Path(unquote(url[len("sqlite:///"):]))


def _cannot_write(exc: sqlite3.Error) -> bool:
    """Whether the error is the disk or the file system refusing, not the database's content."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_BUSY"))


def _write_error(path: Path, exc: sqlite3.Error) -> StorageWriteError:
    """The error as a person needs it: a full disk says so, even when SQLite calls it an I/O error.

    On a full disk SQLite reports SQLITE_FULL when a database page does not fit, but an I/O
    error (SQLITE_IOERR_SHMSIZE, say) when it is the WAL index file that cannot grow.
    """
    name: str | None = getattr(exc, "sqlite_errorname", None)
    full = name == "SQLITE_FULL" or ((name or "").startswith("SQLITE_IOERR") and _free_bytes(path) < 64 * 1024)
    detail = f"{exc} ({name})" if name and name != "SQLITE_FULL" else str(exc)
    return StorageWriteError(str(path), f"disk full ({detail})" if full else detail, code=name)


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 1 << 62  # cannot tell: do not claim the disk is full


class SQLiteStorage(Storage):
    """State in one SQLite file; safe to share between threads of one process."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = path_from_url(url)
        try:
            private_dir(self.path.parent)
            # owner-only, like everything ork writes: state holds outputs, errors and logs; SQLite
            # gives the -wal and -shm files the database file's mode
            for suffix in ("", "-wal", "-shm"):
                if suffix == "" or os.path.exists(f"{self.path}{suffix}"):
                    private_file(f"{self.path}{suffix}")
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open state database {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._sql_cache: dict[tuple[str, tuple[str, ...]], str] = {}
        sync = os.environ.get("ORK_SQLITE_SYNC", "NORMAL").upper()
        if sync not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise StorageError(f"ORK_SQLITE_SYNC={sync!r}: use NORMAL or FULL")
        try:
            self._wal()
            self._db.execute(f"PRAGMA synchronous={sync}")
            # Checkpoint (and fsync) every ~40 MB of WAL instead of every 4 MB: one run commits
            # once per scheduler step, and the checkpoint's fsync dominated small commits.
            self._db.execute("PRAGMA wal_autocheckpoint=10000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if _cannot_write(exc):  # a full disk is not a foreign file
                raise _write_error(self.path, exc) from None
            raise StorageError(f"{self.path} is not an ork state database: {exc}") from None

    def _wal(self) -> None:
        """Switch to WAL, waiting out other processes doing the same.

        Several processes opening one new file at once get SQLITE_BUSY from this pragma at
        once: SQLite does not call the busy handler for it, so the wait is done here.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY" or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        """Bring the schema up to date in one exclusive transaction.

        Several processes may open a new file at the same moment (six `ork run` started by
        a script): each takes the write lock with BEGIN IMMEDIATE, which waits out the
        others through the busy timeout, and re-reads ``user_version`` inside it, so only
        the first creates the tables and the rest find them made.
        """
        if self._user_version() == SCHEMA_VERSION:
            return  # the usual case: no write lock for a database that is already current
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._user_version()  # another process may have migrated meanwhile
                for index in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[index].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={index + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # keep the error that made it fail
                        self._db.execute("ROLLBACK")
                raise

    def _user_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._refuse_newer(version)
        return version

    def _refuse_newer(self, version: int) -> None:
        raise StorageError(
            f"{self.path} has schema version {version}, newer than this ork understands ({SCHEMA_VERSION}); "
            "upgrade ork-core"
        )

    # -- writing -------------------------------------------------------------------------

    def save_workflow(self, hash_: str, name: str, file: str, source: str, compiled: dict[str, Any]) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT OR IGNORE INTO workflows(hash, name, file, source, compiled) VALUES (?,?,?,?,?)",
                (hash_, name, file, source, json.dumps(compiled)),
            )

    def create_run(
        self, run_id: str, workflow_hash: str, workflow_name: str, workflow_file: str, params: dict[str, Any],
        tasks: Sequence[tuple[str, str]], now: float, owner: str | None = None,
        *, origin: RunOrigin | None = None, status: str = "pending",
    ) -> bool:
        o = origin or RunOrigin()
        with self._writing() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs(id, workflow_hash, workflow_name, workflow_file, params, status, created_at,"
                " pid, owner, triggered_by, schedule, logical_ts, logical_date, interval_start, interval_end, managed,"
                " max_active_runs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, workflow_hash, workflow_name, workflow_file, json.dumps(params), status, now,
                 None if status == QUEUED else os.getpid(), owner, o.trigger, o.schedule, o.logical_ts,
                 o.logical_date, o.interval_start, o.interval_end, int(status == QUEUED), o.max_active_runs),
            )
            if not cursor.rowcount:
                if o.logical_ts is None:  # only the tick's unique key may refuse a run silently
                    raise StorageError(f"a run with id {run_id!r} already exists in {self.path}")
                return False
            db.executemany(
                "INSERT INTO tasks(run_id, name, executor, status) VALUES (?,?,?,'pending')",
                [(run_id, name, executor) for name, executor in tasks],
            )
        return True

    def claim_run(
        self, run_id: str, owner: str, *, expected: str | None, lease: float | None = None,
    ) -> str | None:
        # The UPDATE runs under SQLite's write lock: the compare-and-set.
        with self._writing() as db:
            cursor = db.execute(
                # a claim that changes hands drops the old owner's lease; one kept keeps its own
                "UPDATE runs SET owner=?, lease_until=CASE WHEN ? IS NOT NULL THEN ? WHEN owner=? THEN lease_until END"
                " WHERE id=? AND (owner IS ? OR owner=?)",
                (owner, lease, None if lease is None else time.time() + lease, owner, run_id, expected, owner),
            )
            if cursor.rowcount:
                return owner
            row = db.execute("SELECT owner FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
        found: str | None = row[0]
        return found

    def release_run(self, run_id: str, owner: str) -> None:
        with self._writing() as db:
            db.execute("UPDATE runs SET owner=NULL, lease_until=NULL WHERE id=? AND owner=?", (run_id, owner))

    def claim_runs(
        self, owner: str, lease: float, *, run_ids: Collection[str] | None = None, limit: int = 100,
    ) -> list[RunRecord]:
        # BEGIN IMMEDIATE holds SQLite's one write lock from the SELECT to the UPDATE: no other
        # process can claim, renew or release between them, so the SELECT's answer still holds.
        if run_ids is not None and not run_ids:
            return []
        with self._writing() as db:
            now = time.time()
            where = ("managed=1 AND status NOT IN ('success','failed','cancelled')"
                     " AND (owner IS NULL OR (lease_until IS NOT NULL AND lease_until < ?))")
            args: list[Any] = [now]
            if run_ids is not None:
                ids = list(run_ids)
                where += f" AND id IN ({','.join('?' * len(ids))})"
                args.extend(ids)
            rows = db.execute(
                f"SELECT id FROM runs WHERE {where} ORDER BY created_at, rowid LIMIT ?", (*args, limit)
            ).fetchall()
            claimed = [r[0] for r in rows]
            if not claimed:
                return []
            marks = ",".join("?" * len(claimed))
            db.execute(f"UPDATE runs SET owner=?, lease_until=? WHERE id IN ({marks})", (owner, now + lease, *claimed))
            records = db.execute(
                f"SELECT {self._RUN_COLS} FROM runs WHERE id IN ({marks}) ORDER BY created_at, rowid", claimed
            ).fetchall()
        return [self._run(r) for r in records]

    def renew_leases(self, owner: str, run_ids: Collection[str], lease: float) -> set[str]:
        if not run_ids:
            return set()
        ids = list(run_ids)
        marks = ",".join("?" * len(ids))
        with self._writing() as db:
            rows = db.execute(
                f"UPDATE runs SET lease_until=? WHERE owner=? AND id IN ({marks}) RETURNING id",
                (time.time() + lease, owner, *ids),
            ).fetchall()
        return {r[0] for r in rows}

    def write(
        self, updates: Sequence[TaskUpdate | RunUpdate], logs: Sequence[LogLine] = (), metrics: Sequence[Metric] = (),
        *, owner: str | None = None,
    ) -> None:
        if not updates and not logs and not metrics:
            return
        with self._writing() as db:
            if owner is not None:  # under BEGIN IMMEDIATE: no claim can come between this and the writes
                ids = batch_runs(updates, logs, metrics)
                marks = ",".join("?" * len(ids))
                for run_id, found in db.execute(f"SELECT id, owner FROM runs WHERE id IN ({marks})", ids):
                    if found != owner:
                        raise fence_error(run_id, owner, found)
            self._apply(updates)
            if logs:
                db.executemany(
                    "INSERT INTO logs VALUES (?,?,?,?,?,?,?)",
                    [(l.run_id, l.task, l.attempt, l.ts, l.level, l.stream, l.line) for l in logs],
                )
            if metrics:
                db.executemany(
                    "INSERT INTO metrics VALUES (?,?,?,?,?,?,?)",
                    [(m.run_id, m.task, m.attempt, m.ts, m.name, m.value, json.dumps(m.labels)) for m in metrics],
                )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, and the real error when it fails.

        SQLite rolls a transaction back by itself on some errors (SQLITE_FULL among them), and
        a ROLLBACK then fails with "no transaction is active", which used to replace the
        error that mattered. Roll back only what is still open, and raise the original as a
        StorageWriteError naming this database.
        """
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _write_error(self.path, exc) from exc
                raise

    def _update_sql(self, table: str, keys: tuple[str, ...]) -> str:
        """The UPDATE statement for a set of fields, checked and built once per shape."""
        cache_key = (table, keys)
        sql = self._sql_cache.get(cache_key)
        if sql is None:
            allowed = TASK_FIELDS if table == "tasks" else RUN_FIELDS
            bad = set(keys) - allowed
            if bad:
                raise ValueError(f"unknown {table} fields {sorted(bad)}")
            where = "run_id=? AND name=?" if table == "tasks" else "id=?"
            sql = f"UPDATE {table} SET {', '.join(f'{k}=?' for k in keys)} WHERE {where}"
            self._sql_cache[cache_key] = sql
        return sql

    def _apply(self, updates: Sequence[TaskUpdate | RunUpdate]) -> None:
        """Run the updates in order; consecutive ones of the same shape go in one executemany."""
        db = self._db
        batch_sql: str | None = None
        batch: list[tuple[Any, ...]] = []
        dumps = json.dumps
        for u in updates:
            fields = u.fields
            if isinstance(u, RunUpdate):
                sql = self._update_sql("runs", tuple(fields))
                params: tuple[Any, ...] = (*fields.values(), u.run_id)
            else:
                sql = self._update_sql("tasks", tuple(fields))
                params = (
                    *(
                        dumps(v) if v is not None and (k == "output" or k == "handle") and type(v) is not JSONText else v
                        for k, v in fields.items()
                    ),
                    u.run_id,
                    u.task,
                )
            if sql != batch_sql and batch:
                db.executemany(batch_sql, batch)  # type: ignore[arg-type]
                batch = []
            batch_sql = sql
            batch.append(params)
            if isinstance(u, TaskUpdate) and u.attempt_row == "end":
                db.executemany(sql, batch)
                batch, batch_sql = [], None
                status = "failed" if fields["status"] == "retrying" else fields["status"]
                db.execute(
                    "INSERT OR REPLACE INTO attempts(run_id, task, attempt, try_number, status, started_at, finished_at, error)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (
                        u.run_id, u.task, u.attempt, fields.get("try_number", 0), status, fields.get("started_at"),
                        fields.get("finished_at"), fields.get("error"),
                    ),
                )
        if batch:
            db.executemany(batch_sql, batch)  # type: ignore[arg-type]

    # -- reading -------------------------------------------------------------------------

    def load_workflow(self, hash_: str) -> tuple[dict[str, Any], str]:
        with self._lock:
            row = self._db.execute("SELECT compiled, source FROM workflows WHERE hash=?", (hash_,)).fetchone()
        if row is None:
            raise StorageError(f"workflow snapshot {hash_} is missing from {self.path}")
        return json.loads(row[0]), row[1]

    @staticmethod
    def _run(row: sqlite3.Row | tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            id=row[0], workflow_hash=row[1], workflow_name=row[2], workflow_file=row[3], params=json.loads(row[4]),
            status=row[5], created_at=row[6], started_at=row[7], finished_at=row[8], pid=row[9], error=row[10],
            owner=row[11], lease_until=row[21],
            origin=RunOrigin(row[12], row[13], row[14], row[15], row[16], row[17], row[20]),
            managed=bool(row[18]), cancel_requested=bool(row[19]),
        )

    _RUN_COLS = (
        "id, workflow_hash, workflow_name, workflow_file, params, status, created_at, started_at, finished_at, pid, error,"
        " owner, triggered_by, schedule, logical_ts, logical_date, interval_start, interval_end, managed, cancel_requested,"
        " max_active_runs, lease_until"
    )
    _TASK_COLS = (
        "run_id, name, executor, status, attempt, try_number, started_at, finished_at, output, error, idempotency_key,"
        " tracker, handle, link, external_id, deferred_at, last_poll_at, last_poll_error, poll_failures, pgid,"
        " next_try_at, uncertain_retries, adopt_first"
    )

    @staticmethod
    def _task(row: tuple[Any, ...]) -> TaskRecord:
        return TaskRecord(
            run_id=row[0], name=row[1], executor=row[2], status=row[3], attempt=row[4], try_number=row[5],
            started_at=row[6], finished_at=row[7], output=json.loads(row[8]) if row[8] is not None else None,
            error=row[9], idempotency_key=row[10], tracker=row[11],
            handle=json.loads(row[12]) if row[12] is not None else None, link=row[13], external_id=row[14],
            deferred_at=row[15], last_poll_at=row[16], last_poll_error=row[17], poll_failures=row[18], pgid=row[19],
            next_try_at=row[20], uncertain_retries=row[21], adopt_first=bool(row[22]),
        )

    def get_run(self, run_id: str, *, excerpt: int | None = None) -> RunRecord:
        with self._lock:
            row = self._db.execute(f"SELECT {self._RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                ids = [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 200")]
                close = difflib.get_close_matches(run_id, ids, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise RunNotFoundError(f"no run {run_id!r} in {self.path}{hint}")
            run = self._run(row)
            if excerpt is not None:
                self._task_excerpts(run, excerpt)
                return run
            for trow in self._db.execute(f"SELECT {self._TASK_COLS} FROM tasks WHERE run_id=? ORDER BY rowid", (run_id,)):
                task = self._task(trow)
                run.tasks[task.name] = task
        return run

    def _task_excerpts(self, run: RunRecord, n: int) -> None:
        """The tasks of `run` with the start of each output and error, never a whole output.

        The output's first bytes are read through SQLite's incremental blob I/O: even
        ``substr(output, 1, n)`` (or ``output IS NOT NULL``) would load the whole value first;
        ``typeof`` does not. Stored outputs are ASCII JSON, so bytes are characters.
        """
        cols = self._TASK_COLS.replace(" output, error,", " NULL, substr(error, 1, ?),")
        query = f"SELECT {cols}, rowid, typeof(output) != 'null' FROM tasks WHERE run_id=? ORDER BY rowid"
        for trow in self._db.execute(query, (n, run.id)):
            task = self._task(trow[:-2])
            if trow[-1]:
                with self._db.blobopen("tasks", "output", trow[-2], readonly=True) as blob:
                    task.output_excerpt = blob.read(n).decode("utf-8", "ignore")
            run.tasks[task.name] = task

    def list_runs(
        self, limit: int = 50, *, unfinished: bool = False, workflow: str | None = None,
        statuses: Collection[str] | None = None, offset: int = 0, oldest_first: bool = False,
    ) -> list[RunRecord]:
        where: list[str] = []
        args: list[Any] = []
        if unfinished:
            where.append("status NOT IN ('success','failed','cancelled')")
        if workflow is not None:
            where.append("workflow_name=?")
            args.append(workflow)
        if statuses is not None:
            where.append(f"status IN ({','.join('?' * len(statuses))})" if statuses else "0")
            args.extend(statuses)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ASC" if oldest_first else "DESC"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._RUN_COLS} FROM runs {clause} ORDER BY created_at {order}, rowid {order} LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [self._run(r) for r in rows]

    def last_ticks(self) -> dict[tuple[str, str], int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT workflow_name, schedule, MAX(logical_ts) FROM runs"
                " WHERE triggered_by='schedule' AND logical_ts IS NOT NULL GROUP BY workflow_name, schedule"
            ).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    def save_schedules(self, workflow: str, schedules: Sequence[ScheduleRecord]) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM schedules WHERE workflow=?", (workflow,))
            db.executemany(
                "INSERT INTO schedules VALUES (?,?,?,?,?,?,?,?,?)",
                [(s.workflow, s.key, s.file, s.cron, s.timezone, int(s.catchup), s.max_active_runs, json.dumps(s.spec),
                  s.updated_at) for s in schedules],
            )

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM schedules ORDER BY workflow, key").fetchall()
        return [ScheduleRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], json.loads(r[7]), r[8]) for r in rows]

    def set_paused(self, workflow: str, paused: bool, now: float) -> None:
        with self._writing() as db:
            db.execute("INSERT OR REPLACE INTO pauses VALUES (?,?,?)", (workflow, int(paused), now))

    def pause_states(self) -> dict[str, PauseState]:
        with self._lock:
            rows = self._db.execute("SELECT workflow, paused, changed_at FROM pauses").fetchall()
        return {r[0]: PauseState(bool(r[1]), r[2]) for r in rows}

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM ("
                " SELECT run_id, task, attempt, try_number, status, started_at, finished_at, error FROM attempts"
                " WHERE run_id=?"
                " UNION ALL"
                " SELECT run_id, name, attempt, try_number, status, started_at, finished_at, error FROM tasks"
                " WHERE run_id=? AND attempt > 0 AND status NOT IN ('retrying', 'queued', 'pending')"
                ") ORDER BY started_at, task, attempt",
                (run_id, run_id),
            ).fetchall()
        return [AttemptRecord(*r) for r in rows]

    def logs(self, run_id: str, task: str | None = None) -> list[LogLine]:
        query = "SELECT run_id, task, attempt, ts, level, stream, line FROM logs WHERE run_id=?"
        args: tuple[Any, ...] = (run_id,)
        if task is not None:
            query += " AND task=?"
            args += (task,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY rowid", args).fetchall()
        return [LogLine(*r) for r in rows]

    def metrics(self, run_id: str) -> list[Metric]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, task, attempt, ts, name, value, labels FROM metrics WHERE run_id=? ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [Metric(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def deferred_tasks(self) -> list[TaskRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._TASK_COLS} FROM tasks WHERE status='deferred' ORDER BY deferred_at"
            ).fetchall()
        return [self._task(r) for r in rows]

    # -- workers -----------------------------------------------------------------------------

    _WORK_COLS = ("id, run_id, task, attempt, queue, key, payload, status, worker, lease_until, output, error,"
                  " created_at, claimed_at, finished_at")

    @staticmethod
    def _work(row: Sequence[Any], now: float | None = None) -> WorkItem:
        status = row[7]
        if now is not None and status == "running" and (row[9] is None or row[9] < now):
            status = "lost"
        return WorkItem(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), status, row[8], row[9],
                        row[10], row[11], row[12], row[13], row[14])

    def enqueue_work(self, items: Sequence[NewWork], now: float) -> list[str]:
        if not items:
            return []
        keys = [i.key for i in items]
        with self._writing() as db:
            db.executemany(
                "INSERT INTO work_items(id, run_id, task, attempt, queue, key, payload, status, created_at)"
                " VALUES (?,?,?,?,?,?,?,'queued',?) ON CONFLICT(key) DO NOTHING",
                [(secrets.token_hex(8), i.run_id, i.task, i.attempt, i.queue, i.key, json.dumps(i.payload), now)
                 for i in items],
            )
            found: dict[str, str] = {}
            for start in range(0, len(keys), 500):  # within SQLite's limit on bound parameters
                chunk = keys[start:start + 500]
                found.update(db.execute(
                    f"SELECT key, id FROM work_items WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall())
        return [found[k] for k in keys]

    def claim_work(self, worker: str, queues: Collection[str], lease: float, limit: int) -> list[WorkItem]:
        if not queues or limit < 1:
            return []
        names = list(queues)
        marks = ",".join("?" * len(names))
        with self._lock:  # an idle worker looks every poll: a read, not SQLite's one write lock, when nothing waits
            if self._db.execute(
                f"SELECT 1 FROM work_items WHERE status='queued' AND queue IN ({marks}) LIMIT 1", names
            ).fetchone() is None:
                return []
        # BEGIN IMMEDIATE: the one write lock is held from the SELECT to the UPDATE
        with self._writing() as db:
            now = time.time()
            rows = db.execute(
                f"SELECT id FROM work_items WHERE status='queued' AND queue IN ({','.join('?' * len(names))})"
                " ORDER BY created_at, rowid LIMIT ?", (*names, limit),
            ).fetchall()
            ids = [r[0] for r in rows]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            db.execute(
                f"UPDATE work_items SET status='running', worker=?, lease_until=?, claimed_at=? WHERE id IN ({marks})",
                (worker, now + lease, now, *ids),
            )
            claimed = db.execute(
                f"SELECT {self._WORK_COLS} FROM work_items WHERE id IN ({marks}) ORDER BY created_at, rowid", ids
            ).fetchall()
        return [self._work(r) for r in claimed]

    def renew_work(self, worker: str, ids: Collection[str], lease: float) -> set[str]:
        if not ids:
            return set()
        items = list(ids)
        with self._writing() as db:
            now = time.time()
            rows = db.execute(
                f"UPDATE work_items SET lease_until=? WHERE worker=? AND status='running' AND lease_until >= ?"
                f" AND id IN ({','.join('?' * len(items))}) RETURNING id",
                (now + lease, worker, now, *items),
            ).fetchall()
        return {r[0] for r in rows}

    def finish_work(self, worker: str, outcomes: Sequence[WorkOutcome]) -> set[str]:
        check_outcomes(outcomes)
        recorded: set[str] = set()
        if not outcomes:
            return recorded
        with self._writing() as db:
            now = time.time()
            for o in outcomes:
                cursor = db.execute(
                    "UPDATE work_items SET status=?, output=?, error=?, finished_at=?"
                    " WHERE id=? AND worker=? AND status='running' AND lease_until >= ?",
                    (o.status, o.output, o.error, now, o.id, worker, now),
                )
                if cursor.rowcount:
                    recorded.add(o.id)
        return recorded

    def release_work(self, worker: str, ids: Collection[str]) -> set[str]:
        if not ids:
            return set()
        items = list(ids)
        with self._writing() as db:
            rows = db.execute(
                "UPDATE work_items SET status='queued', worker=NULL, lease_until=NULL, claimed_at=NULL"
                f" WHERE worker=? AND status='running' AND id IN ({','.join('?' * len(items))}) RETURNING id",
                (worker, *items),
            ).fetchall()
        return {r[0] for r in rows}

    def cancel_work(self, id: str, owner: str | None = None) -> bool:
        with self._writing() as db:
            cursor = db.execute(
                "UPDATE work_items SET status='cancelled', finished_at=? WHERE id=? AND status IN ('queued','running')"
                " AND (? IS NULL OR EXISTS (SELECT 1 FROM runs WHERE runs.id = work_items.run_id AND runs.owner = ?))",
                (time.time(), id, owner, owner),
            )
        return bool(cursor.rowcount)

    def work_status(self, ids: Collection[str]) -> dict[str, WorkItem]:
        items = list(ids)
        found: dict[str, WorkItem] = {}
        with self._lock:
            now = time.time()
            for i in range(0, len(items), 500):
                chunk = items[i : i + 500]
                for row in self._db.execute(
                    f"SELECT {self._WORK_COLS} FROM work_items WHERE id IN ({','.join('?' * len(chunk))})", chunk
                ):
                    found[row[0]] = self._work(row, now)
        lapsed = [id for id, item in found.items() if item.status == LOST]
        if lapsed:
            found.update(self._record_lost(lapsed))
        return found

    def _record_lost(self, ids: list[str]) -> dict[str, WorkItem]:
        """Record lapsed claims as lost, in a write transaction, and read back what each item is now.

        The read alone cannot decide: a worker's finish_work may have checked its lease and
        not committed yet. Under the write lock that finish is either committed (the item is
        what it recorded) or not begun (it will find the item ``lost``, not ``running``).
        """
        found: dict[str, WorkItem] = {}
        with self._writing() as db:
            now = time.time()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(f"UPDATE work_items SET status='lost', finished_at=? WHERE id IN ({marks})"
                           " AND status='running' AND (lease_until IS NULL OR lease_until < ?)", (now, *chunk, now))
                for row in db.execute(f"SELECT {self._WORK_COLS} FROM work_items WHERE id IN ({marks})", chunk):
                    found[row[0]] = self._work(row)
        return found

    def heartbeat_worker(self, worker: str, host: str, pid: int, queues: Sequence[str]) -> None:
        with self._writing() as db:
            now = time.time()
            db.execute(
                "INSERT INTO workers VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET heartbeat_at=excluded.heartbeat_at",
                (worker, host, pid, json.dumps(list(queues)), now, now),
            )

    def remove_worker(self, worker: str) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM workers WHERE id=?", (worker,))

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT w.id, w.host, w.pid, w.queues, w.started_at, w.heartbeat_at,"
                " (SELECT count(*) FROM work_items i WHERE i.worker = w.id AND i.status='running' AND i.lease_until >= ?)"
                " FROM workers w ORDER BY w.host, w.pid, w.id", (time.time(),),
            ).fetchall()
        return [WorkerRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
