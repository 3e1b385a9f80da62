"""A small BigQuery REST v2 server for the behaviours the emulator cannot show.

``bqemulator`` finishes every job at once, re-runs a job whose id is reused
and never fails on purpose. The executor's crash safety rests exactly on
those paths: a job that is still RUNNING when its tracker restarts, a ``409
Conflict`` on a reused job id, cancellation, and transient 5xx answers. This
server lets a test hold a job RUNNING until it says otherwise, and inject
those answers, while the code under test still talks through the real
``google-cloud-bigquery`` client over HTTP.

It speaks only the calls the executor makes: ``jobs.insert`` (query jobs),
``jobs.get``, ``jobs.cancel`` and ``jobs.getQueryResults``, plus an OAuth
token endpoint so service-account credentials can be exercised without
Google. Everything is in memory and guarded by one lock; ``http.server``
with a thread per request is plenty for tests.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, unquote, urlsplit

Row = Mapping[str, object]
ErrorSpec = str | Mapping[str, str]
Endpoint = Literal["insert", "get", "cancel", "results"]

_JOBS = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/jobs$")
_JOB = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/jobs/(?P<job>[^/]+)$")
_CANCEL = re.compile(
    r"^/bigquery/v2/projects/(?P<project>[^/]+)/jobs/(?P<job>[^/]+)/cancel$"
)
_RESULTS = re.compile(
    r"^/bigquery/v2/projects/(?P<project>[^/]+)/queries/(?P<job>[^/]+)$"
)
_DML = {"INSERT", "UPDATE", "DELETE", "MERGE"}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}
_REASONS = {
    400: "invalid",
    404: "notFound",
    409: "duplicate",
    429: "rateLimitExceeded",
    500: "internalError",
    501: "notImplemented",
    503: "backendError",
}
MAX_LONG_POLL_S = 1.0
"""``getQueryResults`` waits for completion like BigQuery does, but only this
long, so a test that forgot to finish a job does not hang."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _statement_type(sql: str) -> str:
    """Guess BigQuery's ``statementType`` from the SQL's first keyword."""
    words = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL).split()
    first = words[0].upper() if words else ""
    if first in ("SELECT", "WITH", "("):
        return "SELECT"
    if first in _DML:
        return first
    if first in ("CREATE", "DROP", "ALTER", "TRUNCATE"):
        text = " ".join(w.upper() for w in words)
        if first == "CREATE" and (" AS SELECT" in text or " AS WITH" in text):
            return "CREATE_TABLE_AS_SELECT"
        return f"{first}_TABLE"
    return "SCRIPT"


def _error_result(error: ErrorSpec) -> dict[str, str]:
    if isinstance(error, str):
        return {"reason": "invalidQuery", "location": "query", "message": error}
    result = {str(k): str(v) for k, v in error.items()}
    result.setdefault("reason", "invalidQuery")
    result.setdefault("message", "Query error")
    return result


def _field_type(value: object) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "FLOAT"
    if isinstance(value, dt.datetime):
        return "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"


def _cell(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


@dataclass
class FakeJob:
    """A query job as the fake keeps it; tests read copies via ``FakeBigQuery.job``."""

    project: str
    job_id: str
    location: str
    sql: str
    configuration: dict[str, Any]
    statement_type: str
    created_ms: int = field(default_factory=_now_ms)
    state: str = "RUNNING"
    ended_ms: int | None = None
    rows: list[dict[str, object]] = field(default_factory=list)
    total_rows: int | None = None
    dml_affected_rows: int | None = None
    bytes_processed: int = 0
    error: dict[str, str] | None = None
    finish_at: float | None = None
    """Monotonic time after which the scheduled outcome below applies."""
    scheduled: tuple[int | Sequence[Row], int, ErrorSpec | None] | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.configuration.get("labels") or {})

    @property
    def query_config(self) -> dict[str, Any]:
        return dict(self.configuration.get("query") or {})


class _HTTPError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "error")


class FakeBigQuery:
    """In-memory BigQuery REST endpoint on 127.0.0.1 with failure injection.

    Jobs stay RUNNING until :meth:`finish` (immediately or ``after`` a delay),
    or until ``auto_finish_after`` seconds if given (except jobs whose SQL
    contains ``hold_marker``, which run until finished or cancelled). Counters record every
    request per endpoint, including ones answered with an error.
    """

    def __init__(
        self,
        *,
        project: str = "test",
        default_location: str = "US",
        auto_finish_after: float | None = None,
        hold_marker: str | None = None,
        dry_run_bytes: int = 0,
    ) -> None:
        self.project = project
        self.default_location = default_location
        self.auto_finish_after = auto_finish_after
        self.hold_marker = hold_marker
        self.dry_run_bytes = dry_run_bytes
        self.insert_calls = 0
        self.get_calls = 0
        self.cancel_calls = 0
        self.results_calls = 0
        self.token_calls = 0
        self.jobs_created = 0
        """Jobs that actually started; a 409 or an injected failure starts none."""
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.dry_runs: list[dict[str, Any]] = []
        self._jobs: dict[tuple[str, str], FakeJob] = {}
        self._failures: dict[Endpoint, list[tuple[int, bool]]] = {
            "insert": [],
            "get": [],
            "cancel": [],
            "results": [],
        }
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        """Listen on an ephemeral 127.0.0.1 port, serving from a background thread."""
        if self._server is not None:
            raise RuntimeError("FakeBigQuery already started")
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Join request threads on close, so stop() leaves nothing running.
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-bigquery",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join every thread the server started; idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, for ``ClientOptions(api_endpoint=...)``."""
        if self._server is None:
            raise RuntimeError("FakeBigQuery not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_uri(self) -> str:
        """OAuth token endpoint to put in a test service-account file."""
        return f"{self.endpoint}/token"

    # -- test controls -------------------------------------------------------

    def finish(
        self,
        job_id: str,
        rows: int | Sequence[Row] = 0,
        bytes: int = 0,
        error: ErrorSpec | None = None,
        *,
        after: float | None = None,
        project: str | None = None,
    ) -> None:
        """End a job, now or ``after`` seconds from now.

        ``rows`` is a count (DML affected rows for DML statements, else the
        result's total rows) or a list of result rows as dicts. ``error`` is
        BigQuery's message (reason ``invalidQuery``) or a full errorResult.
        """
        with self._lock:
            job = self._get_job(project or self.project, job_id)
            job.scheduled = (rows, bytes, error)
            job.finish_at = time.monotonic() + (after or 0.0)
            self._advance(job)
            self._lock.notify_all()

    def job(self, job_id: str, project: str | None = None) -> FakeJob:
        """A snapshot of a job, for assertions."""
        with self._lock:
            job = self._get_job(project or self.project, job_id)
            self._advance(job)
            return copy.deepcopy(job)

    def job_ids(self) -> list[str]:
        """Ids of the jobs created so far, oldest first."""
        with self._lock:
            return [job_id for (_, job_id) in self._jobs]

    def has_job(self, job_id: str, project: str | None = None) -> bool:
        with self._lock:
            return (project or self.project, job_id) in self._jobs

    def fail_next(
        self,
        endpoint: Endpoint,
        n: int = 1,
        status: int = 503,
        *,
        after_create: bool = False,
    ) -> None:
        """Answer the next ``n`` calls of ``endpoint`` with ``status``.

        With ``after_create`` (inserts only) the job is created first and
        only the answer is lost, as when a connection drops after BigQuery
        accepted the job.
        """
        if after_create and endpoint != "insert":
            raise ValueError("after_create only applies to inserts")
        with self._lock:
            self._failures[endpoint].extend([(status, after_create)] * n)

    def fail_next_gets(self, n: int = 1, status: int = 503) -> None:
        self.fail_next("get", n, status)

    def fail_next_inserts(
        self, n: int = 1, status: int = 503, *, after_create: bool = False
    ) -> None:
        self.fail_next("insert", n, status, after_create=after_create)

    # -- internals (call with the lock held) ---------------------------------

    def _get_job(self, project: str, job_id: str) -> FakeJob:
        try:
            return self._jobs[(project, job_id)]
        except KeyError:
            raise _HTTPError(404, f"Not found: Job {project}:{job_id}") from None

    def _take_failure(self, endpoint: Endpoint) -> tuple[int, bool] | None:
        queue = self._failures[endpoint]
        return queue.pop(0) if queue else None

    def _advance(self, job: FakeJob) -> None:
        """Apply a scheduled outcome whose time has come (lazily, no timers)."""
        if (
            job.state == "DONE"
            or job.finish_at is None
            or time.monotonic() < job.finish_at
        ):
            return
        rows, processed, error = job.scheduled or (0, 0, None)
        job.state = "DONE"
        job.ended_ms = _now_ms()
        job.bytes_processed = processed
        if error is not None:
            job.error = _error_result(error)
            return
        if isinstance(rows, int):
            if job.statement_type in _DML:
                job.dml_affected_rows = rows
            elif job.statement_type == "SELECT":
                job.total_rows = rows
        else:
            job.rows = [dict(r) for r in rows]
            job.total_rows = len(job.rows)

    def _resource(self, job: FakeJob) -> dict[str, Any]:
        query_stats: dict[str, Any] = {
            "statementType": job.statement_type,
            "cacheHit": False,
        }
        stats: dict[str, Any] = {
            "creationTime": str(job.created_ms),
            "startTime": str(job.created_ms),
            "query": query_stats,
        }
        status: dict[str, Any] = {"state": job.state}
        if job.state == "DONE":
            stats["endTime"] = str(job.ended_ms or _now_ms())
            stats["totalBytesProcessed"] = str(job.bytes_processed)
            query_stats["totalBytesProcessed"] = str(job.bytes_processed)
            query_stats["totalBytesBilled"] = str(job.bytes_processed)
            if job.dml_affected_rows is not None:
                query_stats["numDmlAffectedRows"] = str(job.dml_affected_rows)
            if job.error is not None:
                status["errorResult"] = dict(job.error)
                status["errors"] = [dict(job.error)]
        return {
            "kind": "bigquery#job",
            "id": f"{job.project}:{job.location}.{job.job_id}",
            "jobReference": {
                "projectId": job.project,
                "jobId": job.job_id,
                "location": job.location,
            },
            "configuration": copy.deepcopy(job.configuration),
            "status": status,
            "statistics": stats,
            "user_email": "fake@ork.invalid",
        }

    def _schema(self, job: FakeJob) -> list[dict[str, str]]:
        if not job.rows:
            return []
        names = list(job.rows[0])
        fields = []
        for name in names:
            sample = next((r[name] for r in job.rows if r.get(name) is not None), None)
            fields.append(
                {"name": name, "type": _field_type(sample), "mode": "NULLABLE"}
            )
        return fields

    # -- request handlers ----------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        headers: Mapping[str, str],
    ) -> tuple[int, dict[str, Any]]:
        """Route one request; ``headers`` has lower-case names."""
        with self._lock:
            self.requests.append((method, path))
            self.authorizations.append(headers.get("authorization"))
        if method == "POST" and path == "/token":
            with self._lock:
                self.token_calls += 1
            return 200, {
                "access_token": "fake-access-token",
                "expires_in": 3600,
                "token_type": "Bearer",
            }
        if method == "POST" and (m := _JOBS.match(path)):
            return self._insert(unquote(m["project"]), body)
        if method == "GET" and (m := _JOB.match(path)):
            return self._get(unquote(m["project"]), unquote(m["job"]), query)
        if method == "POST" and (m := _CANCEL.match(path)):
            return self._cancel(unquote(m["project"]), unquote(m["job"]), query)
        if method == "GET" and (m := _RESULTS.match(path)):
            return self._results(unquote(m["project"]), unquote(m["job"]), query)
        raise _HTTPError(501, f"FakeBigQuery does not implement {method} {path}")

    def _check_location(self, job: FakeJob, query: Mapping[str, str]) -> None:
        # BigQuery looks jobs up per location: the right id in the wrong
        # location is "not found", which makes a dropped location visible.
        location = query.get("location")
        if location and location.lower() != job.location.lower():
            raise _HTTPError(
                404, f"Not found: Job {job.project}:{location}.{job.job_id}"
            )

    def _insert(self, project: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.insert_calls += 1
        if not isinstance(body, dict):
            raise _HTTPError(400, "Request body must be a Job resource")
        configuration = body.get("configuration") or {}
        query_config = configuration.get("query")
        if not isinstance(query_config, dict) or "query" not in query_config:
            raise _HTTPError(400, "FakeBigQuery only runs query jobs")
        reference = body.get("jobReference") or {}
        job_id = str(reference.get("jobId") or uuid.uuid4().hex)
        location = str(reference.get("location") or self.default_location)
        sql = str(query_config["query"])
        with self._lock:
            failure = self._take_failure("insert")
            if failure is not None and not failure[1]:
                raise _HTTPError(failure[0], "The service is currently unavailable.")
            if configuration.get("dryRun"):
                self.dry_runs.append(copy.deepcopy(configuration))
                job = FakeJob(
                    project,
                    job_id,
                    location,
                    sql,
                    copy.deepcopy(configuration),
                    _statement_type(sql),
                )
                job.state, job.ended_ms, job.bytes_processed = (
                    "DONE",
                    _now_ms(),
                    self.dry_run_bytes,
                )
                return 200, self._resource(job)
            if (project, job_id) in self._jobs:
                existing = self._jobs[(project, job_id)]
                raise _HTTPError(
                    409,
                    f"Already Exists: Job {project}:{existing.location}.{job_id}",
                    "duplicate",
                )
            job = FakeJob(
                project,
                job_id,
                location,
                sql,
                copy.deepcopy(configuration),
                _statement_type(sql),
            )
            held = self.hold_marker is not None and self.hold_marker in sql
            if self.auto_finish_after is not None and not held:
                job.finish_at = time.monotonic() + self.auto_finish_after
            self._jobs[(project, job_id)] = job
            self.jobs_created += 1
            self._lock.notify_all()
            if failure is not None:
                raise _HTTPError(failure[0], "The service is currently unavailable.")
            return 200, self._resource(job)

    def _get(
        self, project: str, job_id: str, query: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.get_calls += 1
            failure = self._take_failure("get")
            if failure is not None:
                raise _HTTPError(failure[0], "The service is currently unavailable.")
            job = self._get_job(project, job_id)
            self._check_location(job, query)
            self._advance(job)
            return 200, self._resource(job)

    def _cancel(
        self, project: str, job_id: str, query: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.cancel_calls += 1
            failure = self._take_failure("cancel")
            if failure is not None:
                raise _HTTPError(failure[0], "The service is currently unavailable.")
            job = self._get_job(project, job_id)
            self._check_location(job, query)
            self._advance(job)
            if job.state != "DONE":
                job.state, job.ended_ms = "DONE", _now_ms()
                job.error = {
                    "reason": "stopped",
                    "message": "Job execution was cancelled: User requested cancellation",
                }
                self._lock.notify_all()
            return 200, {
                "kind": "bigquery#jobCancelResponse",
                "job": self._resource(job),
            }

    def _results(
        self, project: str, job_id: str, query: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        wait_s = min(float(query.get("timeoutMs", "10000")) / 1000.0, MAX_LONG_POLL_S)
        deadline = time.monotonic() + wait_s
        with self._lock:
            self.results_calls += 1
            failure = self._take_failure("results")
            if failure is not None:
                raise _HTTPError(failure[0], "The service is currently unavailable.")
            job = self._get_job(project, job_id)
            self._check_location(job, query)
            self._advance(job)
            while job.state != "DONE" and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(timeout=min(remaining, 0.02))
                self._advance(job)
            reference = {
                "projectId": project,
                "jobId": job_id,
                "location": job.location,
            }
            if job.state != "DONE":
                return 200, {
                    "kind": "bigquery#getQueryResultsResponse",
                    "jobReference": reference,
                    "jobComplete": False,
                }
            if job.error is not None:
                # As BigQuery does: the job's error becomes the call's error.
                raise _HTTPError(400, job.error["message"], job.error.get("reason"))
            response: dict[str, Any] = {
                "kind": "bigquery#getQueryResultsResponse",
                "jobReference": reference,
                "jobComplete": True,
                "totalBytesProcessed": str(job.bytes_processed),
                "cacheHit": False,
            }
            if job.dml_affected_rows is not None:
                response["numDmlAffectedRows"] = str(job.dml_affected_rows)
            if job.total_rows is not None:
                schema = self._schema(job)
                response["schema"] = {"fields": schema}
                response["totalRows"] = str(job.total_rows)
                start = int(query.get("pageToken") or query.get("startIndex") or 0)
                size = int(query.get("maxResults") or 1000)
                page = job.rows[start : start + size]
                if page:
                    names = [f["name"] for f in schema]
                    response["rows"] = [
                        {"f": [{"v": _cell(r.get(n))} for n in names]} for r in page
                    ]
                if start + size < len(job.rows) and size > 0:
                    response["pageToken"] = str(start + size)
            return 200, response


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBigQuery
    # HTTP/1.0: one request per connection, so no idle keep-alive thread
    # outlives stop().
    protocol_version = "HTTP/1.0"

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw and "json" in (self.headers.get("Content-Type") or ""):
            body = json.loads(raw)
        try:
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, payload = self.fake.handle(method, parts.path, query, body, headers)
        except _HTTPError as exc:
            code = exc.code
            payload = {
                "error": {
                    "code": exc.code,
                    "message": exc.message,
                    "errors": [
                        {
                            "message": exc.message,
                            "domain": "global",
                            "reason": exc.reason,
                        }
                    ],
                    "status": _STATUS_NAMES.get(
                        exc.code, HTTPStatus(exc.code).phrase.upper()
                    ),
                }
            }
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging; the counters and ``requests`` say enough."""
