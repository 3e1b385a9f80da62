"""`PostgresStorage`: ork's state in a PostgreSQL database that several processes and machines share.

One connection per `Storage`, guarded by a lock: the scheduler's thread and the worker
threads that flush logs take turns, as with SQLite; a scheduler commits once per step, so a
pool would buy nothing yet. Every value goes through query parameters; the only SQL built
from text is the column list of an update, checked against the contract's field names.

What makes sharing safe is in the database, not in this process: `claim_run` is one
conditional UPDATE (a second claimant blocks on the row, then re-checks the owner and finds
it taken); `claim_runs` locks its candidates with ``FOR UPDATE SKIP LOCKED`` (the technique
of Airflow's HA scheduler), so schedulers claiming at once split the runs between them
instead of queueing on each other's rows; leases are stamped and compared with the server's
clock (``clock_timestamp()``), never a client's; and one run per tick is the ``runs_tick``
unique index that ``INSERT … ON CONFLICT DO NOTHING`` consults.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import secrets
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ork_core.errors import RunNotFoundError, StorageError, StorageWriteError
from ork_core.secrets import mask, register_url, strip_password
from ork_core.storage.base import (
    LOST,
    QUEUED,
    RUN_FIELDS,
    TASK_FIELDS,
    AttemptRecord,
    JSONText,
    LogLine,
    Metric,
    NewWork,
    PauseState,
    RunOrigin,
    RunRecord,
    RunUpdate,
    ScheduleRecord,
    Storage,
    TaskRecord,
    TaskUpdate,
    WorkerRecord,
    WorkItem,
    WorkOutcome,
    batch_runs,
    check_outcomes,
    fence_error,
)
from ork_storage_postgres.connect import connect
from ork_storage_postgres.migrations import SCHEMA_VERSION, NewerSchema, migrate

Connection = psycopg.Connection[tuple[Any, ...]]

SCHEDULES_LOCK = 0x6F726B73  # "orks": with the workflow's hash, the advisory lock of save_schedules

_BOOL_FIELDS = frozenset({"adopt_first", "managed", "cancel_requested"})
"""Fields the scheduler may send as 0/1 that PostgreSQL keeps as boolean (it casts no int to boolean)."""
_JSON_FIELDS = frozenset({"output", "handle"})

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
_EXCERPT_COLS = _TASK_COLS.replace(" output, error,", " NULL, substr(error, 1, %(n)s),")
EXCERPT_QUERY = f"SELECT {_EXCERPT_COLS}, substr(output, 1, %(n)s) FROM tasks WHERE run_id = %(id)s ORDER BY seq"
"""The tasks of a run for a display. substr reads a prefix of a TOASTed value (PostgreSQL
fetches, and decompresses, only that far): a display never loads whole outputs."""


class PostgresStorage(Storage):
    """State in a PostgreSQL database (``postgresql://user:password@host:5432/db``)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        register_url(url)  # the password is masked wherever ork prints or stores text from now on
        self.safe_url = strip_password(url)
        self._lock = threading.RLock()
        self._sql_cache: dict[tuple[str, tuple[str, ...]], sql.Composed] = {}
        self._conn = connect(url)
        try:
            migrate(self._conn)
        except NewerSchema as exc:
            self._conn.close()
            raise StorageError(
                f"{self.safe_url} has schema version {exc.version}, newer than this ork-storage-postgres "
                f"understands ({SCHEMA_VERSION}); upgrade it (pip install -U ork-storage-postgres) on this machine"
            ) from None
        except psycopg.Error as exc:
            self._conn.close()
            raise StorageError(f"cannot migrate the state database {self.safe_url}: {_detail(exc)}") from None

    # -- plumbing ------------------------------------------------------------------------

    def _connection(self) -> Connection:
        """The connection, opened again if the server dropped it (a restart, a failover)."""
        if self._conn.closed or self._conn.broken:
            self._conn = connect(self.url)
        return self._conn

    def _begin(self) -> Connection:
        """BEGIN; a connection the server dropped while it sat idle is replaced once, first.

        Nothing of the caller's work has been sent when BEGIN fails, so beginning again on a
        new connection cannot apply anything twice. A connection lost later (mid-batch, or
        during COMMIT, when nobody knows whether the commit happened) is not retried: the
        error goes to the scheduler, which stops the run resumably.
        """
        conn = self._connection()
        try:
            conn.execute("BEGIN")
        except psycopg.OperationalError:
            if not conn.broken:
                raise
            self._conn = conn = connect(self.url)
            conn.execute("BEGIN")
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._begin()
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # keep the error that made it fail
                        conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction; a refusal is rolled back and raised as StorageWriteError."""
        try:
            with self._transaction() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._error(exc, write=True) from exc
        except StorageWriteError:
            raise
        except StorageError as exc:  # could not connect again
            raise StorageWriteError(self.safe_url, str(exc)) from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """One transaction, so the several queries of one read see one snapshot."""
        try:
            with self._transaction() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._error(exc, write=False) from exc

    def _statement(self, sql: str, params: Any, *, write: bool) -> tuple[list[Any], int]:
        """One statement in autocommit, atomic by itself: one round trip where BEGIN, it and COMMIT take three.

        For the calls a worker or a triggerer makes for every task. A connection the server
        dropped is replaced and the statement sent once more, as `_begin` does for BEGIN: a
        backend that was gone never ran it. Only a server that fails after committing the
        statement and before answering leaves that open, as a failed COMMIT does; the calls
        made this way are safe to repeat, or lose nothing but a lease when repeated.
        Returns the rows (if the statement returns any) and the row count.
        """
        with self._lock:
            for again in (False, True):
                try:
                    conn = self._connection()
                    cursor = conn.execute(sql, params)
                    return (cursor.fetchall() if cursor.description else []), cursor.rowcount
                except psycopg.OperationalError as exc:
                    if not again and conn.broken:
                        continue
                    raise self._error(exc, write=write) from exc
                except psycopg.Error as exc:
                    raise self._error(exc, write=write) from exc
                except StorageError as exc:  # could not connect again
                    raise (StorageWriteError(self.safe_url, str(exc)) if write else exc) from None
        raise AssertionError("unreachable")

    def _error(self, exc: psycopg.Error, *, write: bool) -> StorageError:
        """The server's refusal as ork's error: a write's is a StorageWriteError (the scheduler stops the run resumably)."""
        if write:
            return StorageWriteError(self.safe_url, _detail(exc), code=exc.sqlstate)
        return StorageError(f"cannot read the state database {self.safe_url}: {_detail(exc)}")

    # -- writing -------------------------------------------------------------------------

    def save_workflow(self, hash_: str, name: str, file: str, source: str, compiled: dict[str, Any]) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO workflows(hash, name, file, source, compiled) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (hash) DO NOTHING",
                (hash_, name, file, source, json.dumps(compiled)),
            )

    def create_run(
        self, run_id: str, workflow_hash: str, workflow_name: str, workflow_file: str, params: dict[str, Any],
        tasks: Sequence[tuple[str, str]], now: float, owner: str | None = None,
        *, origin: RunOrigin | None = None, status: str = "pending",
    ) -> bool:
        o = origin or RunOrigin()
        try:
            with self._writing() as conn:
                cursor = conn.execute(
                    "INSERT INTO runs(id, workflow_hash, workflow_name, workflow_file, params, status, created_at, pid,"
                    " owner, triggered_by, schedule, logical_ts, logical_date, interval_start, interval_end, managed,"
                    " max_active_runs) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    # only the tick's key may refuse a run silently: a duplicate id still raises
                    " ON CONFLICT (workflow_name, schedule, logical_ts) WHERE logical_ts IS NOT NULL DO NOTHING",
                    (run_id, workflow_hash, workflow_name, workflow_file, json.dumps(params), status, now,
                     None if status == QUEUED else os.getpid(), owner, o.trigger, o.schedule, o.logical_ts,
                     o.logical_date, o.interval_start, o.interval_end, status == QUEUED, o.max_active_runs),
                )
                if not cursor.rowcount:
                    return False
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO tasks(run_id, name, executor, status) VALUES (%s, %s, %s, 'pending')",
                        [(run_id, name, executor) for name, executor in tasks],
                    )
        except StorageWriteError as exc:
            cause = exc.__cause__
            if isinstance(cause, psycopg.errors.UniqueViolation) and cause.diag.constraint_name == "runs_pkey":
                raise StorageError(f"a run with id {run_id!r} already exists in {self.safe_url}") from None
            raise
        return True

    def claim_run(
        self, run_id: str, owner: str, *, expected: str | None, lease: float | None = None,
    ) -> str | None:
        # Under READ COMMITTED a concurrent claim waits for the row, then re-evaluates the WHERE
        # on the committed owner: exactly one of two claimants that read the same owner wins.
        with self._writing() as conn:
            row = conn.execute(
                # a claim that changes hands drops the old owner's lease; one kept keeps its own;
                # a leased claim is leased, by the server's clock, in the same statement
                "UPDATE runs SET owner = %(owner)s, lease_until = CASE"
                " WHEN %(lease)s::double precision IS NOT NULL"
                " THEN extract(epoch FROM clock_timestamp()) + %(lease)s::double precision"
                " WHEN owner = %(owner)s THEN lease_until END WHERE id = %(id)s"
                " AND (owner IS NOT DISTINCT FROM %(expected)s OR owner = %(owner)s) RETURNING owner",
                {"owner": owner, "id": run_id, "expected": expected, "lease": lease},
            ).fetchone()
            if row is not None:
                return owner
            found = conn.execute("SELECT owner FROM runs WHERE id = %s", (run_id,)).fetchone()
        if found is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.safe_url}")
        current: str | None = found[0]
        return current

    def release_run(self, run_id: str, owner: str) -> None:
        with self._writing() as conn:
            conn.execute("UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = %s AND owner = %s", (run_id, owner))

    def claim_runs(
        self, owner: str, lease: float, *, run_ids: Collection[str] | None = None, limit: int = 100,
    ) -> list[RunRecord]:
        if run_ids is not None and not run_ids:
            return []
        only = sql.SQL("AND id = ANY(%(ids)s)") if run_ids is not None else sql.SQL("")
        query = sql.SQL(
            "WITH candidates AS ("
            " SELECT id AS cid FROM runs WHERE managed AND status NOT IN ('success', 'failed', 'cancelled')"
            " AND (owner IS NULL OR lease_until < extract(epoch FROM clock_timestamp())) {}"
            " ORDER BY created_at, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE runs SET owner = %(owner)s, lease_until = extract(epoch FROM clock_timestamp()) + %(lease)s"
            " FROM candidates WHERE runs.id = candidates.cid RETURNING {}"
        ).format(only, sql.SQL(_RUN_COLS))
        args = {"owner": owner, "lease": lease, "limit": limit, "ids": list(run_ids or ())}
        with self._writing() as conn:
            rows = conn.execute(query, args).fetchall()
        return sorted((_run(r) for r in rows), key=lambda r: r.created_at)

    def renew_leases(self, owner: str, run_ids: Collection[str], lease: float) -> set[str]:
        if not run_ids:
            return set()
        with self._writing() as conn:
            rows = conn.execute(
                "UPDATE runs SET lease_until = extract(epoch FROM clock_timestamp()) + %s"
                " WHERE owner = %s AND id = ANY(%s) RETURNING id",
                (lease, owner, list(run_ids)),
            ).fetchall()
        return {r[0] for r in rows}

    def write(
        self, updates: Sequence[TaskUpdate | RunUpdate], logs: Sequence[LogLine] = (), metrics: Sequence[Metric] = (),
        *, owner: str | None = None,
    ) -> None:
        if not updates and not logs and not metrics:
            return
        with self._writing() as conn, conn.cursor() as cur:
            if owner is not None:
                # FOR SHARE: a claim (FOR UPDATE, or its UPDATE) of these runs waits for this
                # batch to commit, and this one waits for a claim in progress, then sees its owner
                rows = cur.execute(
                    "SELECT id, owner FROM runs WHERE id = ANY(%s) FOR SHARE", (batch_runs(updates, logs, metrics),)
                ).fetchall()
                for run_id, found in rows:
                    if found != owner:
                        raise fence_error(run_id, owner, found)
            self._apply(cur, updates)
            if logs:
                cur.executemany(
                    "INSERT INTO logs(run_id, task, attempt, ts, level, stream, line) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(l.run_id, l.task, l.attempt, l.ts, l.level, l.stream, _text(l.line)) for l in logs],
                )
            if metrics:
                cur.executemany(
                    "INSERT INTO metrics(run_id, task, attempt, ts, name, value, labels)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(m.run_id, m.task, m.attempt, m.ts, m.name, m.value, json.dumps(m.labels)) for m in metrics],
                )

    def _update_sql(self, table: str, keys: tuple[str, ...]) -> sql.Composed:
        """The UPDATE for a set of fields, checked against the contract and built once per shape."""
        cache_key = (table, keys)
        query = self._sql_cache.get(cache_key)
        if query is None:
            allowed = TASK_FIELDS if table == "tasks" else RUN_FIELDS
            bad = set(keys) - allowed
            if bad:
                raise ValueError(f"unknown {table} fields {sorted(bad)}")
            where = sql.SQL("run_id = %s AND name = %s" if table == "tasks" else "id = %s")
            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in keys)
            query = sql.SQL("UPDATE {} SET {} WHERE {}").format(sql.Identifier(table), sets, where)
            self._sql_cache[cache_key] = query
        return query

    def _apply(self, cur: psycopg.Cursor[tuple[Any, ...]], updates: Sequence[TaskUpdate | RunUpdate]) -> None:
        """Run the updates in order; consecutive ones of the same shape go in one executemany."""
        batch_sql: sql.Composed | None = None
        batch: list[tuple[Any, ...]] = []
        for u in updates:
            fields = u.fields
            if isinstance(u, RunUpdate):
                query = self._update_sql("runs", tuple(fields))
                params: tuple[Any, ...] = (*(_value(k, v) for k, v in fields.items()), u.run_id)
            else:
                query = self._update_sql("tasks", tuple(fields))
                params = (*(_value(k, v) for k, v in fields.items()), u.run_id, u.task)
            if query is not batch_sql and batch:
                assert batch_sql is not None
                cur.executemany(batch_sql, batch)
                batch = []
            batch_sql = query
            batch.append(params)
            if isinstance(u, TaskUpdate) and u.attempt_row == "end":
                cur.executemany(query, batch)
                batch, batch_sql = [], None
                status = "failed" if fields["status"] == "retrying" else fields["status"]
                cur.execute(
                    "INSERT INTO attempts(run_id, task, attempt, try_number, status, started_at, finished_at, error)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, task, attempt) DO UPDATE SET"
                    " try_number = excluded.try_number, status = excluded.status, started_at = excluded.started_at,"
                    " finished_at = excluded.finished_at, error = excluded.error",
                    (u.run_id, u.task, u.attempt, fields.get("try_number", 0), status, fields.get("started_at"),
                     fields.get("finished_at"), _value("error", fields.get("error"))),
                )
        if batch and batch_sql is not None:
            cur.executemany(batch_sql, batch)

    def save_schedules(self, workflow: str, schedules: Sequence[ScheduleRecord]) -> None:
        with self._writing() as conn, conn.cursor() as cur:
            # Schedulers starting together replace a workflow's schedules at once: under READ
            # COMMITTED both DELETEs see nothing to wait for and the second INSERT hits the key.
            # One at a time per workflow, each replacing what the one before wrote.
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SCHEDULES_LOCK, workflow))
            cur.execute("DELETE FROM schedules WHERE workflow = %s", (workflow,))
            cur.executemany(
                "INSERT INTO schedules(workflow, key, file, cron, timezone, catchup, max_active_runs, spec, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(s.workflow, s.key, s.file, s.cron, s.timezone, bool(s.catchup), s.max_active_runs,
                  json.dumps(s.spec), s.updated_at) for s in schedules],
            )

    def set_paused(self, workflow: str, paused: bool, now: float) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO pauses(workflow, paused, changed_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (workflow) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at",
                (workflow, bool(paused), now),
            )

    # -- reading -------------------------------------------------------------------------

    def load_workflow(self, hash_: str) -> tuple[dict[str, Any], str]:
        with self._reading() as conn:
            row = conn.execute("SELECT compiled, source FROM workflows WHERE hash = %s", (hash_,)).fetchone()
        if row is None:
            raise StorageError(f"workflow snapshot {hash_} is missing from {self.safe_url}")
        return json.loads(row[0]), row[1]

    def get_run(self, run_id: str, *, excerpt: int | None = None) -> RunRecord:
        with self._reading() as conn:
            row = conn.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id = %s", (run_id,)).fetchone()
            if row is None:
                ids = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY created_at DESC, seq DESC LIMIT 200")]
                close = difflib.get_close_matches(run_id, ids, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise RunNotFoundError(f"no run {run_id!r} in {self.safe_url}{hint}")
            run = _run(row)
            if excerpt is None:
                rows = conn.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = %s ORDER BY seq", (run_id,))
                for trow in rows:
                    task = _task(trow)
                    run.tasks[task.name] = task
                return run
            rows = conn.execute(EXCERPT_QUERY, {"n": excerpt, "id": run_id})
            for trow in rows:
                task = _task(trow[:-1])
                task.output_excerpt = trow[-1]
                run.tasks[task.name] = task
        return run

    def list_runs(
        self, limit: int = 50, *, unfinished: bool = False, workflow: str | None = None,
        statuses: Collection[str] | None = None, offset: int = 0, oldest_first: bool = False,
    ) -> list[RunRecord]:
        where: list[sql.Composable] = []
        args: list[Any] = []
        if unfinished:
            where.append(sql.SQL("status NOT IN ('success', 'failed', 'cancelled')"))
        if workflow is not None:
            where.append(sql.SQL("workflow_name = %s"))
            args.append(workflow)
        if statuses is not None:
            where.append(sql.SQL("status = ANY(%s)"))
            args.append(list(statuses))
        clause = sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        order = sql.SQL("ASC" if oldest_first else "DESC")
        query = sql.SQL("SELECT {} FROM runs {} ORDER BY created_at {}, seq {} LIMIT %s OFFSET %s").format(
            sql.SQL(_RUN_COLS), clause, order, order
        )
        with self._reading() as conn:
            rows = conn.execute(query, (*args, limit, offset)).fetchall()
        return [_run(r) for r in rows]

    def last_ticks(self) -> dict[tuple[str, str], int]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT workflow_name, schedule, max(logical_ts) FROM runs"
                " WHERE triggered_by = 'schedule' AND logical_ts IS NOT NULL GROUP BY workflow_name, schedule"
            ).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT workflow, key, file, cron, timezone, catchup, max_active_runs, spec, updated_at FROM schedules"
                ' ORDER BY workflow COLLATE "C", key COLLATE "C"'  # byte order, as SQLite sorts, whatever the locale
            ).fetchall()
        return [ScheduleRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8]) for r in rows]

    def pause_states(self) -> dict[str, PauseState]:
        with self._reading() as conn:
            rows = conn.execute("SELECT workflow, paused, changed_at FROM pauses").fetchall()
        return {r[0]: PauseState(r[1], r[2]) for r in rows}

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT * FROM ("
                " SELECT run_id, task, attempt, try_number, status, started_at, finished_at, error FROM attempts"
                " WHERE run_id = %(id)s"
                " UNION ALL"
                " SELECT run_id, name, attempt, try_number, status, started_at, finished_at, error FROM tasks"
                " WHERE run_id = %(id)s AND attempt > 0 AND status NOT IN ('retrying', 'queued', 'pending')"
                ") AS a ORDER BY started_at NULLS FIRST, task COLLATE \"C\", attempt",
                {"id": run_id},
            ).fetchall()
        return [AttemptRecord(*r) for r in rows]

    def logs(self, run_id: str, task: str | None = None) -> list[LogLine]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT run_id, task, attempt, ts, level, stream, line FROM logs"
                " WHERE run_id = %s AND (%s::text IS NULL OR task = %s) ORDER BY seq",
                (run_id, task, task),
            ).fetchall()
        return [LogLine(*r) for r in rows]

    def metrics(self, run_id: str) -> list[Metric]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT run_id, task, attempt, ts, name, value, labels FROM metrics WHERE run_id = %s ORDER BY seq",
                (run_id,),
            ).fetchall()
        return [Metric(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def deferred_tasks(self) -> list[TaskRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE status = 'deferred' ORDER BY deferred_at NULLS FIRST, seq"
            ).fetchall()
        return [_task(r) for r in rows]

    # -- workers -----------------------------------------------------------------------------

    def enqueue_work(self, items: Sequence[NewWork], now: float) -> list[str]:
        if not items:
            return []
        keys = [i.key for i in items]
        items = list({i.key: i for i in items}.values())  # a key once: DO UPDATE may touch a row only once
        # One statement of arrays: one round trip however many items. `seq` follows the
        # arrays' order (WITH ORDINALITY), the order workers claim them in. A key enqueued
        # before keeps its row; the no-op update is there so RETURNING names that row's id too.
        rows, _ = self._statement(
            "INSERT INTO work_items(id, run_id, task, attempt, queue, key, payload, status, created_at)"
            " SELECT id, run_id, task, attempt, queue, key, payload, 'queued', %s FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS t(id, run_id, task, attempt, queue, key, payload, n)"
            " ORDER BY n ON CONFLICT (key) DO UPDATE SET key = excluded.key RETURNING key, id",
            (now, [secrets.token_hex(8) for _ in items], [i.run_id for i in items], [i.task for i in items],
             [i.attempt for i in items], [i.queue for i in items], [i.key for i in items],
             [json.dumps(i.payload) for i in items]),
            write=True,
        )
        found = dict(rows)
        return [found[k] for k in keys]

    def claim_work(self, worker: str, queues: Collection[str], lease: float, limit: int) -> list[WorkItem]:
        if not queues or limit < 1:
            return []
        # one queue (the common case) as `queue = …`, so the index hands rows over in order
        # and LIMIT stops early; with ANY the server sorts every queued row of the queues first
        which = "queue = %(queue)s" if len(queues) == 1 else "queue = ANY(%(queues)s)"
        rows, _ = self._statement(
            "WITH candidates AS ("
            f" SELECT id AS cid FROM work_items WHERE status = 'queued' AND {which}"
            " ORDER BY created_at, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE work_items SET status = 'running', worker = %(worker)s,"
            " claimed_at = extract(epoch FROM clock_timestamp()),"
            " lease_until = extract(epoch FROM clock_timestamp()) + %(lease)s"
            f" FROM candidates WHERE work_items.id = candidates.cid RETURNING {_WORK_COLS}, seq",
            {"queues": list(queues), "queue": next(iter(queues)), "limit": limit, "worker": worker, "lease": lease},
            write=True,
        )
        return [_work(r) for r in sorted(rows, key=lambda r: (r[12], r[15]))]

    def renew_work(self, worker: str, ids: Collection[str], lease: float) -> set[str]:
        if not ids:
            return set()
        rows, _ = self._statement(
            "UPDATE work_items SET lease_until = extract(epoch FROM clock_timestamp()) + %s"
            " WHERE worker = %s AND status = 'running' AND lease_until >= extract(epoch FROM clock_timestamp())"
            " AND id = ANY(%s) RETURNING id",
            (lease, worker, list(ids)), write=True,
        )
        return {r[0] for r in rows}

    def finish_work(self, worker: str, outcomes: Sequence[WorkOutcome]) -> set[str]:
        check_outcomes(outcomes)
        if not outcomes:
            return set()
        rows, _ = self._statement(
            "UPDATE work_items w SET status = o.status, output = o.output, error = o.error,"
            " finished_at = extract(epoch FROM clock_timestamp())"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS o(id, status, output, error)"
            " WHERE w.id = o.id AND w.worker = %s AND w.status = 'running'"
            " AND w.lease_until >= extract(epoch FROM clock_timestamp()) RETURNING w.id",
            ([o.id for o in outcomes], [o.status for o in outcomes],
             [None if o.output is None else _text(o.output) for o in outcomes],
             [None if o.error is None else _text(o.error) for o in outcomes], worker),
            write=True,
        )
        return {r[0] for r in rows}

    def release_work(self, worker: str, ids: Collection[str]) -> set[str]:
        if not ids:
            return set()
        rows, _ = self._statement(
            "UPDATE work_items SET status = 'queued', worker = NULL, lease_until = NULL, claimed_at = NULL"
            " WHERE worker = %s AND status = 'running' AND id = ANY(%s) RETURNING id",
            (worker, list(ids)), write=True,
        )
        return {r[0] for r in rows}

    def cancel_work(self, id: str, owner: str | None = None) -> bool:
        _, count = self._statement(
            "UPDATE work_items SET status = 'cancelled', finished_at = extract(epoch FROM clock_timestamp())"
            " WHERE id = %(id)s AND status IN ('queued', 'running') AND (%(owner)s::text IS NULL OR EXISTS"
            " (SELECT 1 FROM runs WHERE runs.id = work_items.run_id AND runs.owner = %(owner)s::text))",
            {"id": id, "owner": owner}, write=True,
        )
        return bool(count)

    def work_status(self, ids: Collection[str]) -> dict[str, WorkItem]:
        if not ids:
            return {}
        rows, _ = self._statement(
            f"SELECT {_WORK_COLS}, extract(epoch FROM clock_timestamp()) FROM work_items WHERE id = ANY(%s)",
            (list(ids),), write=False,
        )
        found = {r[0]: _work(r, now=float(r[15])) for r in rows}
        lapsed = [id for id, item in found.items() if item.status == LOST]
        if lapsed:
            found.update(self._record_lost(lapsed))
        return found

    def _record_lost(self, ids: list[str]) -> dict[str, WorkItem]:
        """Record lapsed claims as lost, and read back what each item is now.

        A read alone cannot decide: a worker's finish_work may have checked its lease and not
        committed yet. The UPDATE waits for that row lock and re-checks the committed row, so
        an item is lost only if its worker can no longer finish it (finish_work wants it
        ``running``): never lost to the scheduler and succeeded in storage.
        """
        with self._writing() as conn:
            conn.execute(
                "UPDATE work_items SET status = 'lost', finished_at = extract(epoch FROM clock_timestamp())"
                " WHERE id = ANY(%s) AND status = 'running' AND lease_until < extract(epoch FROM clock_timestamp())",
                (ids,),
            )
            rows = conn.execute(f"SELECT {_WORK_COLS} FROM work_items WHERE id = ANY(%s)", (ids,)).fetchall()
        return {r[0]: _work(r) for r in rows}

    def heartbeat_worker(self, worker: str, host: str, pid: int, queues: Sequence[str]) -> None:
        self._statement(
            "INSERT INTO workers VALUES (%s, %s, %s, %s, extract(epoch FROM clock_timestamp()),"
            " extract(epoch FROM clock_timestamp()))"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            (worker, host, pid, json.dumps(list(queues))), write=True,
        )

    def remove_worker(self, worker: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM workers WHERE id = %s", (worker,))

    def list_workers(self) -> list[WorkerRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT w.id, w.host, w.pid, w.queues, w.started_at, w.heartbeat_at,"
                " (SELECT count(*) FROM work_items i WHERE i.worker = w.id AND i.status = 'running'"
                "  AND i.lease_until >= extract(epoch FROM clock_timestamp()))"
                " FROM workers w ORDER BY w.host, w.pid, w.id"
            ).fetchall()
        return [WorkerRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], int(r[6])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_WORK_COLS = ("id, run_id, task, attempt, queue, key, payload, status, worker, lease_until, output, error,"
              " created_at, claimed_at, finished_at")


def _work(row: Sequence[Any], now: float | None = None) -> WorkItem:
    status = row[7]
    if now is not None and status == "running" and (row[9] is None or row[9] < now):
        status = "lost"
    return WorkItem(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), status, row[8], row[9],
                    row[10], row[11], row[12], row[13], row[14])


def _value(key: str, value: Any) -> Any:
    """A field's value as its column takes it: JSON encoded once, flags as booleans."""
    if value is None:
        return None
    if key in _JSON_FIELDS:
        return value if type(value) is JSONText else json.dumps(value)
    if key in _BOOL_FIELDS:
        return bool(value)
    if type(value) is str:
        return _text(value)
    return value


def _text(text: str) -> str:
    """PostgreSQL's text cannot hold NUL, which a task may well print: it is stored as U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _detail(exc: psycopg.Error) -> str:
    """The server's message on one line, masked (a failing statement may quote a value)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return mask(f"{text} ({exc.sqlstate})" if exc.sqlstate else text)


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        id=row[0], workflow_hash=row[1], workflow_name=row[2], workflow_file=row[3], params=json.loads(row[4]),
        status=row[5], created_at=row[6], started_at=row[7], finished_at=row[8], pid=row[9], error=row[10],
        owner=row[11], lease_until=row[21], origin=RunOrigin(row[12], row[13], row[14], row[15], row[16], row[17], row[20]),
        managed=row[18], cancel_requested=row[19],
    )


def _task(row: Sequence[Any]) -> TaskRecord:
    return TaskRecord(
        run_id=row[0], name=row[1], executor=row[2], status=row[3], attempt=row[4], try_number=row[5],
        started_at=row[6], finished_at=row[7], output=json.loads(row[8]) if row[8] is not None else None,
        error=row[9], idempotency_key=row[10], tracker=row[11],
        handle=json.loads(row[12]) if row[12] is not None else None, link=row[13], external_id=row[14],
        deferred_at=row[15], last_poll_at=row[16], last_poll_error=row[17], poll_failures=row[18], pgid=row[19],
        next_try_at=row[20], uncertain_retries=row[21], adopt_first=row[22],
    )
