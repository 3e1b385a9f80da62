"""A local, in-process stand-in for the Cloud Run Admin API v2 (jobs and executions).

Google ships no emulator for Cloud Run, yet the executor must be tested against the
real ``google-cloud-run`` client, because most of the ways an integration breaks live
in the wire format: URL templates, JSON field names, ``Any`` packing in long-running
operations, enum encoding, error bodies. ``FakeCloudRun`` therefore speaks the same
REST dialect as ``run.googleapis.com`` for the handful of methods ork uses and lets a
test steer what the "cloud" does (how long executions take, whether they fail, which
calls fail transiently) and observe what the client did (counters, request log).

Only 127.0.0.1 is ever bound; the port is chosen by the OS.

Fidelity notes (things the fake does on purpose, because the real API does them):

* responses are proto3 JSON: camelCase keys, zero counters and empty fields omitted,
  int64 as strings, RFC 3339 timestamps with a ``Z`` suffix;
* when the client asks for ``$alt=json;enum-encoding=int`` (the GAPIC REST clients do),
  enums are sent as numbers, otherwise as names;
* request bodies with unknown JSON fields are rejected with 400 INVALID_ARGUMENT, as
  Google's front end does, so a typo in a request shows up here and not in production;
* errors are ``{"error": {"code", "message", "status", "details"?}}``;
* executions are listed newest first, with ``pageSize``/``pageToken``/``nextPageToken``.

Things it does not model: task retries (``maxRetries`` is echoed, never used), IAM
beyond a per-job "forbidden" switch, job creation over HTTP, deletion of executions,
``validateOnly``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import socket
import string
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

Json = dict[str, Any]

EXECUTION_TYPE_URL = "type.googleapis.com/google.cloud.run.v2.Execution"
DEFAULT_FAIL_MESSAGE = "The container exited with an error."
DEFAULT_IMAGE = "us-docker.pkg.dev/cloudrun/container/job:latest"

# gRPC canonical status names for the HTTP codes the fake can answer with.
_STATUS_FOR_HTTP: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Enum numbers of google.cloud.run.v2.Condition / google.api.LaunchStage, for
# ``enum-encoding=int``. Hard-coded on purpose: the fake must not borrow its
# serialisation from the client library it is meant to check.
_CONDITION_STATE = {
    "STATE_UNSPECIFIED": 0,
    "CONDITION_PENDING": 1,
    "CONDITION_RECONCILING": 2,
    "CONDITION_FAILED": 3,
    "CONDITION_SUCCEEDED": 4,
}
_SEVERITY = {"SEVERITY_UNSPECIFIED": 0, "ERROR": 1, "WARNING": 2, "INFO": 3}
_EXECUTION_REASON = {
    "EXECUTION_REASON_UNDEFINED": 0,
    "JOB_STATUS_SERVICE_POLLING_ERROR": 1,
    "NON_ZERO_EXIT_CODE": 2,
    "CANCELLED": 3,
    "CANCELLING": 4,
    "DELETED": 5,
}
_LAUNCH_STAGE = {"LAUNCH_STAGE_UNSPECIFIED": 0, "ALPHA": 2, "BETA": 3, "GA": 4}
_COMPLETION_STATUS = {
    "COMPLETION_STATUS_UNSPECIFIED": 0,
    "EXECUTION_SUCCEEDED": 1,
    "EXECUTION_FAILED": 2,
    "EXECUTION_RUNNING": 3,
    "EXECUTION_PENDING": 4,
    "EXECUTION_CANCELLED": 5,
}
_CONDITION_ENUMS = {"state": _CONDITION_STATE, "severity": _SEVERITY, "executionReason": _EXECUTION_REASON}

# Environment variable names Cloud Run sets itself inside job tasks and refuses to
# have overridden.
_RESERVED_ENV = frozenset(
    {"CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_ATTEMPT", "CLOUD_RUN_TASK_COUNT"}
)
_MAX_TASK_COUNT = 10_000
_MAX_TIMEOUT_S = 168 * 3600

_SEG = r"[^/:]+"
_PREFIX = rf"^/v2/projects/(?P<project>{_SEG})/locations/(?P<location>{_SEG})"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(_PREFIX + rf"/jobs/(?P<job>{_SEG})$"), "_get_job"),
    ("POST", re.compile(_PREFIX + rf"/jobs/(?P<job>{_SEG}):run$"), "_run_job"),
    ("GET", re.compile(_PREFIX + rf"/jobs/(?P<job>{_SEG})/executions$"), "_list_executions"),
    ("GET", re.compile(_PREFIX + rf"/jobs/(?P<job>{_SEG})/executions/(?P<execution>{_SEG})$"), "_get_execution"),
    (
        "POST",
        re.compile(_PREFIX + rf"/jobs/(?P<job>{_SEG})/executions/(?P<execution>{_SEG}):cancel$"),
        "_cancel_execution",
    ),
    ("GET", re.compile(_PREFIX + rf"/operations/(?P<operation>{_SEG})$"), "_get_operation"),
]


def _rfc3339(t: float) -> str:
    """Cloud Run stamps times in UTC "Zulu" form; clients parse exactly that."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _duration(seconds: float) -> str:
    """proto3 JSON spells a Duration as decimal seconds with an ``s`` suffix."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def _parse_duration(text: Any) -> float:
    if not isinstance(text, str) or not text.endswith("s"):
        raise _ApiError(
            400, f"Invalid value at 'overrides.timeout' (type.googleapis.com/google.protobuf.Duration), {text!r}"
        )
    try:
        return float(text[:-1])
    except ValueError:
        raise _ApiError(
            400, f"Invalid value at 'overrides.timeout' (type.googleapis.com/google.protobuf.Duration), {text!r}"
        ) from None


class _ApiError(Exception):
    """An error the fake answers with, in Google's JSON error shape."""

    def __init__(self, code: int, message: str, *, status: str | None = None, details: list[Json] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_FOR_HTTP.get(code, "UNKNOWN")
        self.details = details or []

    def body(self) -> Json:
        error: Json = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


@dataclass
class RecordedRequest:
    """One request as the fake received it, so tests can assert on what the client sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Json | None
    status: int = 0


@dataclass
class FakeJob:
    """A Cloud Run job and the behaviour its executions will have."""

    project: str
    region: str
    job_id: str
    duration_s: float | None
    fail_tasks: frozenset[int]
    fail_message: str
    forbidden: bool
    task_count: int
    parallelism: int
    timeout_s: float
    max_retries: int
    start_delay_s: float
    cancel_delay_s: float
    image: str
    args: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    uid: str
    created_at: float
    execution_count: int = 0
    latest_execution: str | None = None

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.job_id}"


@dataclass
class _Task:
    index: int
    start: float
    end: float  # a task that would run forever is killed at its timeout
    failed: bool
    message: str


@dataclass
class FakeExecution:
    """An execution with its whole timeline planned at creation; only cancel changes it."""

    name: str
    execution_id: str
    job: FakeJob
    seq: int
    uid: str
    created_at: float
    start_at: float
    tasks: list[_Task]
    parallelism: int
    timeout_s: float
    args: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    cancel_requested_at: float | None = None
    cancel_effective_at: float | None = None

    def natural_completion(self) -> float:
        return max(t.end for t in self.tasks)


@dataclass
class _View:
    """What an execution looks like at one instant."""

    phase: str  # pending | running | cancelling | succeeded | failed | cancelled
    start_time: float | None
    completion_time: float | None
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    message: str = ""
    last_transition: float = 0.0

    @property
    def finished(self) -> bool:
        return self.completion_time is not None


@dataclass
class _Operation:
    name: str
    kind: str  # run | cancel
    execution: str


@dataclass
class _Faults:
    get_failures: list[int] = field(default_factory=list)
    get_delays: list[float] = field(default_factory=list)
    run_failures: list[tuple[int, bool]] = field(default_factory=list)
    run_answer_holds: list[float] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    """Tracks live connections so ``stop()`` can end keep-alive sessions promptly."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, owner: FakeCloudRun) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (e.g. after its own timeout) is normal; anything else is a fake bug."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        self.owner.server_errors.append(f"handler error for {client_address}: {exc!r}")

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeCloudRun/1.0"
    timeout = 10  # an idle keep-alive connection must not pin a thread forever

    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest output should show test failures, not access logs."""

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        owner = self.server.owner
        delay = owner._take_delay(method)
        if delay:
            owner._stopping.wait(delay)  # sleeps outside the state lock; stop() cuts it short
        status, body = owner._handle(method, self.path, raw)
        hold = owner._take_answer_hold(method, self.path, status)
        if hold:
            owner._stopping.wait(hold)  # the execution exists; its creator does not know yet
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


class FakeCloudRun:
    """Cloud Run Admin API v2 (jobs, executions, operations) on 127.0.0.1.

    Use as a context manager or call ``start()``/``stop()``. ``clock`` is injectable so
    a test can drive execution timelines without sleeping; by default wall time is used.
    """

    def __init__(
        self,
        project: str = "test-project",
        region: str = "us-central1",
        *,
        clock: Callable[[], float] = time.time,
        default_page_size: int = 50,
        max_page_size: int = 100,
    ) -> None:
        self.project = project
        self.region = region
        self._clock = clock
        self._default_page_size = default_page_size
        self._max_page_size = max_page_size
        self._lock = threading.RLock()
        self._jobs: dict[str, FakeJob] = {}
        self._executions: dict[str, FakeExecution] = {}
        self._operations: dict[str, _Operation] = {}
        self._seq = itertools.count(1)
        self._faults = _Faults()
        self._server: _Server | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.server_errors: list[str] = []
        self.run_calls_by_job: Counter[str] = Counter()
        self.get_calls = 0
        self.list_calls = 0
        self.cancel_calls = 0
        self.operation_get_calls = 0

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeCloudRun already started")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-cloudrun", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeCloudRun is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ test controls

    def add_job(
        self,
        name: str,
        duration_s: float | None = 0.3,
        fail: bool = False,
        fail_message: str = DEFAULT_FAIL_MESSAGE,
        forbidden: bool = False,
        *,
        fail_tasks: Sequence[int] | None = None,
        task_count: int = 1,
        parallelism: int = 0,
        timeout_s: float = 600,
        max_retries: int = 3,
        start_delay_s: float = 0.0,
        cancel_delay_s: float = 0.0,
        image: str = DEFAULT_IMAGE,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        project: str | None = None,
        region: str | None = None,
    ) -> str:
        """Create a job; returns its full resource name.

        ``duration_s=None`` makes executions run until cancelled (or until their task
        timeout). ``fail=True`` fails task 0; ``fail_tasks`` picks the failing indexes.
        ``parallelism=0`` means "as many as possible", like the real API.
        """
        failing = frozenset(fail_tasks) if fail_tasks is not None else (frozenset({0}) if fail else frozenset())
        job = FakeJob(
            project=project or self.project,
            region=region or self.region,
            job_id=name,
            duration_s=duration_s,
            fail_tasks=failing,
            fail_message=fail_message,
            forbidden=forbidden,
            task_count=task_count,
            parallelism=parallelism,
            timeout_s=timeout_s,
            max_retries=max_retries,
            start_delay_s=start_delay_s,
            cancel_delay_s=cancel_delay_s,
            image=image,
            args=list(args),
            env=dict(env or {}),
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
            uid=str(uuid.uuid4()),
            created_at=self._clock(),
        )
        with self._lock:
            self._jobs[job.name] = job
        return job.name

    def job(self, name: str) -> FakeJob:
        """The job by short or full name, for tests that tweak behaviour mid-test."""
        with self._lock:
            return self._jobs[self._job_key(name)]

    def set_forbidden(self, name: str, forbidden: bool = True) -> None:
        with self._lock:
            self._jobs[self._job_key(name)].forbidden = forbidden

    def remove_job(self, name: str) -> None:
        """Delete a job and, as Cloud Run does, its executions."""
        with self._lock:
            job = self._jobs.pop(self._job_key(name))
            for ex_name in [n for n, e in self._executions.items() if e.job is job]:
                del self._executions[ex_name]

    def fail_next_gets(self, n: int, code: int = 503) -> None:
        """The next ``n`` GET requests, whatever their path, answer ``code``."""
        with self._lock:
            self._faults.get_failures.extend([code] * n)

    def slow_next_gets(self, n: int, delay_s: float) -> None:
        """The next ``n`` GET requests answer only after ``delay_s``, to exercise client timeouts."""
        with self._lock:
            self._faults.get_delays.extend([delay_s] * n)

    def _take_delay(self, method: str) -> float:
        with self._lock:
            if method == "GET" and self._faults.get_delays:
                return self._faults.get_delays.pop(0)
            return 0.0

    def hold_next_run_answers(self, n: int, hold_s: float) -> None:
        """The next ``n`` successful ``:run`` calls create their execution at once but answer after ``hold_s``.

        This opens the window in which a caller can die knowing nothing of the execution
        it started (``stop()`` cuts the wait short).
        """
        with self._lock:
            self._faults.run_answer_holds.extend([hold_s] * n)

    def _take_answer_hold(self, method: str, path: str, status: int) -> float:
        with self._lock:
            if method == "POST" and status == 200 and urlsplit(path).path.endswith(":run") and self._faults.run_answer_holds:
                return self._faults.run_answer_holds.pop(0)
            return 0.0

    def fail_next_runs(self, n: int, code: int = 503, *, after_create: bool = False) -> None:
        """The next ``n`` ``:run`` calls answer ``code``.

        With ``after_create=True`` the execution is created anyway and only the answer
        is lost, which is the case a crash-safe executor must adopt rather than rerun.
        """
        with self._lock:
            self._faults.run_failures.extend([(code, after_create)] * n)

    @property
    def run_calls(self) -> int:
        """Total ``:run`` requests received, including those answered with an error."""
        with self._lock:
            return sum(self.run_calls_by_job.values())

    def execution_names(self, job: str | None = None) -> list[str]:
        """Execution names, newest first, optionally for one job."""
        with self._lock:
            key = self._job_key(job) if job is not None else None
            found = [e for e in self._executions.values() if key is None or e.job.name == key]
            return [e.name for e in sorted(found, key=lambda e: e.seq, reverse=True)]

    def execution_json(self, name: str, *, int_enums: bool = False) -> Json:
        """The execution exactly as a GET would return it now."""
        with self._lock:
            return self._execution_body(self._executions[name], self._clock(), int_enums)

    def execution(self, name: str) -> FakeExecution:
        with self._lock:
            return self._executions[name]

    def find_executions_by_env(self, name: str, value: str) -> list[str]:
        """Executions (newest first) whose main container ran with ``name=value``."""
        with self._lock:
            found = [e for e in self._executions.values() if e.env.get(name) == value]
            return [e.name for e in sorted(found, key=lambda e: e.seq, reverse=True)]

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.run_calls_by_job.clear()
            self.get_calls = self.list_calls = self.cancel_calls = self.operation_get_calls = 0

    # ------------------------------------------------------------ HTTP dispatch

    def _job_key(self, name: str) -> str:
        if name.startswith("projects/"):
            return name
        return f"projects/{self.project}/locations/{self.region}/jobs/{name}"

    def _handle(self, method: str, raw_path: str, raw_body: bytes) -> tuple[int, Json]:
        split = urlsplit(raw_path)
        query = parse_qs(split.query, keep_blank_values=True)
        body: Json | None = None
        record = RecordedRequest(method=method, path=split.path, query=query, body=None)
        with self._lock:
            self.requests.append(record)
            try:
                if raw_body:
                    try:
                        parsed = json.loads(raw_body)
                    except ValueError:
                        raise _ApiError(400, "Invalid JSON payload received.") from None
                    if not isinstance(parsed, dict):
                        raise _ApiError(400, "Invalid JSON payload received. Expected an object.")
                    body = parsed
                    record.body = body
                status, answer = self._route(method, split.path, query, body, record)
            except _ApiError as err:
                status, answer = err.code, err.body()
            except Exception as exc:  # noqa: BLE001 - a bug in the fake must surface as a 500, not a hang
                self.server_errors.append(f"{method} {raw_path}: {exc!r}")
                status, answer = 500, _ApiError(500, f"fake internal error: {exc!r}").body()
            record.status = status
            return status, answer

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: Json | None, record: RecordedRequest
    ) -> tuple[int, Json]:
        for route_method, pattern, handler_name in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method != method:
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            int_enums = any("enum-encoding=int" in v for v in query.get("$alt", []))
            if handler_name == "_get_execution":
                self.get_calls += 1
            elif handler_name == "_list_executions":
                self.list_calls += 1
            elif handler_name == "_cancel_execution":
                self.cancel_calls += 1
            elif handler_name == "_get_operation":
                self.operation_get_calls += 1
            if method == "GET" and self._faults.get_failures:
                code = self._faults.get_failures.pop(0)
                raise _ApiError(code, "The service is currently unavailable." if code == 503 else "Injected failure.")
            handler: Callable[..., Json] = getattr(self, handler_name)
            return 200, handler(params=params, query=query, body=body or {}, int_enums=int_enums)
        self.unhandled.append(record)
        raise _ApiError(404, f"The requested URL {path} was not found on this server (method {method}).")

    # ----------------------------------------------------------------- lookups

    def _require_job(self, params: Mapping[str, str], permission: str) -> FakeJob:
        key = f"projects/{params['project']}/locations/{params['location']}/jobs/{params['job']}"
        job = self._jobs.get(key)
        if job is not None and job.forbidden:
            raise _ApiError(
                403,
                f"Permission '{permission}' denied on resource '{key}' (or resource may not exist).",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "IAM_PERMISSION_DENIED",
                        "domain": "run.googleapis.com",
                        "metadata": {"permission": permission, "resource": key},
                    }
                ],
            )
        if job is None:
            raise _ApiError(
                404,
                f"Resource '{params['job']}' of kind 'JOB' in region '{params['location']}' "
                f"in project '{params['project']}' does not exist.",
            )
        return job

    def _require_execution(self, params: Mapping[str, str], permission: str) -> FakeExecution:
        job = self._require_job(params, permission)
        name = f"{job.name}/executions/{params['execution']}"
        ex = self._executions.get(name)
        if ex is None:
            raise _ApiError(
                404,
                f"Resource '{params['execution']}' of kind 'EXECUTION' in region '{params['location']}' "
                f"in project '{params['project']}' does not exist.",
            )
        return ex

    # ---------------------------------------------------------------- handlers

    def _get_job(self, *, params: Mapping[str, str], query: Any, body: Json, int_enums: bool) -> Json:
        job = self._require_job(params, "run.jobs.get")
        return self._job_body(job, self._clock(), int_enums)

    def _run_job(self, *, params: Mapping[str, str], query: Any, body: Json, int_enums: bool) -> Json:
        key = f"projects/{params['project']}/locations/{params['location']}/jobs/{params['job']}"
        self.run_calls_by_job[params["job"]] += 1
        fault: tuple[int, bool] | None = self._faults.run_failures.pop(0) if self._faults.run_failures else None
        if fault is not None and not fault[1]:
            raise _ApiError(
                fault[0], "The service is currently unavailable." if fault[0] == 503 else "Injected failure."
            )
        job = self._require_job(params, "run.jobs.run")
        _check_fields(body, {"name", "validateOnly", "etag", "overrides"}, "")
        if body.get("name") not in (None, key):
            raise _ApiError(400, "Request 'name' does not match the URL.")
        if body.get("validateOnly"):
            raise _ApiError(501, "validateOnly is not supported by FakeCloudRun.")
        overrides = body.get("overrides") or {}
        _check_fields(overrides, {"containerOverrides", "taskCount", "timeout"}, "overrides")
        task_count = job.task_count
        if "taskCount" in overrides:
            task_count = int(overrides["taskCount"])
            if not 1 <= task_count <= _MAX_TASK_COUNT:
                raise _ApiError(400, f"overrides.task_count must be between 1 and {_MAX_TASK_COUNT}, got {task_count}.")
        timeout_s = job.timeout_s
        if "timeout" in overrides:
            timeout_s = _parse_duration(overrides["timeout"])
            if not 0 < timeout_s <= _MAX_TIMEOUT_S:
                raise _ApiError(400, f"overrides.timeout must be positive and at most {_MAX_TIMEOUT_S}s.")
        args = list(job.args)
        env = dict(job.env)
        container_overrides = overrides.get("containerOverrides") or []
        if not isinstance(container_overrides, list):
            raise _ApiError(400, "Invalid value at 'overrides.container_overrides': expected a list.")
        for i, co in enumerate(container_overrides):
            where = f"overrides.containerOverrides[{i}]"
            _check_fields(co, {"name", "args", "env", "clearArgs"}, where)
            if co.get("name") not in (None, "", "job"):
                raise _ApiError(400, f"{where}.name: container {co['name']!r} not found in job {job.job_id!r}.")
            if co.get("clearArgs"):
                args = []
            if co.get("args"):
                args = [str(a) for a in co["args"]]
            for j, item in enumerate(co.get("env") or []):
                _check_fields(item, {"name", "value", "valueSource"}, f"{where}.env[{j}]")
                env_name = item.get("name") or ""
                if not env_name:
                    raise _ApiError(400, f"{where}.env[{j}].name must not be empty.")
                if env_name in _RESERVED_ENV:
                    raise _ApiError(400, f"{where}.env[{j}]: the environment variable name {env_name!r} is reserved.")
                env[env_name] = str(item.get("value", ""))
        ex = self._create_execution(job, task_count=task_count, timeout_s=timeout_s, args=args, env=env)
        op = self._new_operation("run", ex)
        if fault is not None:  # created, but the caller never learns it
            raise _ApiError(
                fault[0], "The service is currently unavailable." if fault[0] == 503 else "Injected failure."
            )
        return self._operation_body(op, self._clock(), int_enums)

    def _list_executions(
        self, *, params: Mapping[str, str], query: dict[str, list[str]], body: Json, int_enums: bool
    ) -> Json:
        job = self._require_job(params, "run.executions.list")
        page_size = int((query.get("pageSize") or ["0"])[0] or 0)
        if page_size < 0:
            raise _ApiError(400, "page_size must not be negative.")
        page_size = min(page_size or self._default_page_size, self._max_page_size)
        token = (query.get("pageToken") or [""])[0]
        offset = 0
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
                offset = int(decoded["offset"])
                if decoded["job"] != job.name:
                    raise ValueError("token for another job")
            except (ValueError, KeyError, TypeError):
                raise _ApiError(400, "Invalid page token.") from None
        found = sorted((e for e in self._executions.values() if e.job is job), key=lambda e: e.seq, reverse=True)
        now = self._clock()
        page = found[offset : offset + page_size]
        answer: Json = {}
        if page:
            answer["executions"] = [self._execution_body(e, now, int_enums) for e in page]
        if offset + page_size < len(found):
            raw = json.dumps({"job": job.name, "offset": offset + page_size}).encode()
            answer["nextPageToken"] = base64.urlsafe_b64encode(raw).decode()
        return answer

    def _get_execution(self, *, params: Mapping[str, str], query: Any, body: Json, int_enums: bool) -> Json:
        ex = self._require_execution(params, "run.executions.get")
        return self._execution_body(ex, self._clock(), int_enums)

    def _cancel_execution(self, *, params: Mapping[str, str], query: Any, body: Json, int_enums: bool) -> Json:
        ex = self._require_execution(params, "run.executions.cancel")
        _check_fields(body, {"name", "validateOnly", "etag"}, "")
        now = self._clock()
        view = self._view(ex, now)
        if view.phase in ("succeeded", "failed"):
            raise _ApiError(
                400,
                f"Execution '{ex.execution_id}' has already completed and cannot be cancelled.",
                status="FAILED_PRECONDITION",
            )
        if ex.cancel_requested_at is None:
            ex.cancel_requested_at = now
            ex.cancel_effective_at = now + ex.job.cancel_delay_s
        op = self._new_operation("cancel", ex)
        return self._operation_body(op, now, int_enums)

    def _get_operation(self, *, params: Mapping[str, str], query: Any, body: Json, int_enums: bool) -> Json:
        name = f"projects/{params['project']}/locations/{params['location']}/operations/{params['operation']}"
        op = self._operations.get(name)
        if op is None or op.execution not in self._executions:
            raise _ApiError(
                404,
                f"Resource '{params['operation']}' of kind 'OPERATION' in region '{params['location']}' "
                f"in project '{params['project']}' does not exist.",
            )
        return self._operation_body(op, self._clock(), int_enums)

    # --------------------------------------------------------------- the model

    def _create_execution(
        self, job: FakeJob, *, task_count: int, timeout_s: float, args: list[str], env: dict[str, str]
    ) -> FakeExecution:
        now = self._clock()
        alphabet = string.ascii_lowercase + string.digits
        while True:
            execution_id = f"{job.job_id}-{''.join(secrets.choice(alphabet) for _ in range(5))}"
            name = f"{job.name}/executions/{execution_id}"
            if name not in self._executions:
                break
        start_at = now + job.start_delay_s
        width = job.parallelism if job.parallelism > 0 else task_count
        tasks: list[_Task] = []
        for index in range(task_count):
            # A task runs for its duration, or is killed at the task timeout.
            runtime = timeout_s if job.duration_s is None else min(job.duration_s, timeout_s)
            t_start = start_at + (index // width) * runtime
            task_name = f"{execution_id}-task{index}"
            if job.duration_s is None or job.duration_s > timeout_s:
                message = (
                    f"Task {task_name} failed with message: The task has reached the configured timeout "
                    f"of {_duration(timeout_s)}."
                )
                tasks.append(_Task(index, t_start, t_start + timeout_s, True, message))
            else:
                failed = index in job.fail_tasks
                message = f"Task {task_name} failed with message: {job.fail_message}" if failed else ""
                tasks.append(_Task(index, t_start, t_start + runtime, failed, message))
        ex = FakeExecution(
            name=name,
            execution_id=execution_id,
            job=job,
            seq=next(self._seq),
            uid=str(uuid.uuid4()),
            created_at=now,
            start_at=start_at,
            tasks=tasks,
            parallelism=job.parallelism,
            timeout_s=timeout_s,
            args=args,
            env=env,
            labels=dict(job.labels),
            annotations=dict(job.annotations),
        )
        self._executions[name] = ex
        job.execution_count += 1
        job.latest_execution = name
        return ex

    def _new_operation(self, kind: str, ex: FakeExecution) -> _Operation:
        job = ex.job
        op = _Operation(
            name=f"projects/{job.project}/locations/{job.region}/operations/{uuid.uuid4()}",
            kind=kind,
            execution=ex.name,
        )
        self._operations[op.name] = op
        return op

    def _view(self, ex: FakeExecution, now: float) -> _View:
        natural = ex.natural_completion()
        cancel_at = ex.cancel_effective_at
        finished_naturally = natural <= now and (cancel_at is None or natural <= cancel_at)
        cancelled = not finished_naturally and cancel_at is not None and cancel_at <= now
        horizon = cancel_at if cancelled and cancel_at is not None else now
        view = _View(phase="running", start_time=ex.start_at if ex.start_at <= horizon else None, completion_time=None)
        for task in ex.tasks:
            if task.end <= horizon:
                if task.failed:
                    view.failed += 1
                else:
                    view.succeeded += 1
            elif cancelled:
                view.cancelled += 1
            elif task.start <= now:
                view.running += 1
        transitions = [ex.created_at] + [ex.start_at] * (view.start_time is not None)
        transitions += [t.end for t in ex.tasks if t.end <= horizon]
        if finished_naturally:
            view.completion_time = natural
            failed = [t for t in ex.tasks if t.failed]
            if failed:
                view.phase = "failed"
                view.message = failed[0].message
            else:
                view.phase = "succeeded"
                view.message = f"Execution completed successfully in {natural - ex.start_at:.2f}s."
        elif cancelled and cancel_at is not None:
            view.completion_time = cancel_at
            view.phase = "cancelled"
            view.message = "The execution was cancelled."
            transitions.append(cancel_at)
        elif ex.cancel_requested_at is not None:
            view.phase = "cancelling"
            view.message = "The execution is being cancelled."
            transitions.append(ex.cancel_requested_at)
        elif view.start_time is None:
            view.phase = "pending"
        view.last_transition = max(transitions)
        return view

    def _conditions(self, ex: FakeExecution, view: _View) -> list[Json]:
        started_at = view.start_time
        started_state = "CONDITION_SUCCEEDED" if started_at is not None else "CONDITION_PENDING"
        conditions: list[Json] = [
            {
                "type": "ResourcesAvailable",
                "state": started_state,
                "lastTransitionTime": _rfc3339(started_at if started_at is not None else ex.created_at),
            },
            {
                "type": "Started",
                "state": started_state,
                "lastTransitionTime": _rfc3339(started_at if started_at is not None else ex.created_at),
            },
        ]
        completed: Json = {"type": "Completed", "lastTransitionTime": _rfc3339(view.last_transition)}
        if view.phase == "succeeded":
            completed.update(state="CONDITION_SUCCEEDED", message=view.message)
        elif view.phase == "failed":
            completed.update(state="CONDITION_FAILED", message=view.message, severity="ERROR")
            if not any("timeout" in t.message for t in ex.tasks if t.failed):
                completed["executionReason"] = "NON_ZERO_EXIT_CODE"
        elif view.phase == "cancelled":
            completed.update(state="CONDITION_FAILED", message=view.message, executionReason="CANCELLED")
        elif view.phase == "cancelling":
            completed.update(state="CONDITION_RECONCILING", message=view.message, executionReason="CANCELLING")
        elif view.phase == "running":
            completed.update(state="CONDITION_RECONCILING")
        else:
            completed.update(state="CONDITION_PENDING")
        conditions.append(completed)
        return conditions

    def _execution_body(self, ex: FakeExecution, now: float, int_enums: bool) -> Json:
        view = self._view(ex, now)
        job = ex.job
        container: Json = {"image": job.image}
        if ex.args:
            container["args"] = list(ex.args)
        if ex.env:
            container["env"] = [{"name": k, "value": v} for k, v in ex.env.items()]
        container["resources"] = {"limits": {"cpu": "1000m", "memory": "512Mi"}}
        template: Json = {
            "containers": [container],
            "maxRetries": job.max_retries,
            "timeout": _duration(ex.timeout_s),
            "serviceAccount": f"{job.project}-compute@developer.gserviceaccount.com",
            "executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
        }
        body: Json = {
            "name": ex.name,
            "uid": ex.uid,
            "generation": "1",
        }
        if ex.labels:
            body["labels"] = dict(ex.labels)
        if ex.annotations:
            body["annotations"] = dict(ex.annotations)
        body["createTime"] = _rfc3339(ex.created_at)
        if view.start_time is not None:
            body["startTime"] = _rfc3339(view.start_time)
        if view.completion_time is not None:
            body["completionTime"] = _rfc3339(view.completion_time)
        body["updateTime"] = _rfc3339(view.last_transition)
        body["launchStage"] = "GA"
        body["job"] = job.job_id
        if ex.parallelism:
            body["parallelism"] = ex.parallelism
        body["taskCount"] = len(ex.tasks)
        body["template"] = template
        if not view.finished:
            body["reconciling"] = True
        body["conditions"] = self._conditions(ex, view)
        body["observedGeneration"] = "1"
        for key, count in (
            ("runningCount", view.running),
            ("succeededCount", view.succeeded),
            ("failedCount", view.failed),
            ("cancelledCount", view.cancelled),
        ):
            if count:
                body[key] = count
        body["logUri"] = (
            f"https://console.cloud.google.com/logs/viewer?project={job.project}"
            f"&advancedFilter=resource.type%3D%22cloud_run_job%22%0Aresource.labels.job_name%3D%22{job.job_id}%22"
            f"%0Aresource.labels.location%3D%22{job.region}%22%0Alabels.%22run.googleapis.com/execution_name%22"
            f"%3D%22{ex.execution_id}%22"
        )
        body["etag"] = f'"{uuid.uuid5(uuid.NAMESPACE_URL, ex.uid + body["updateTime"])}"'
        if int_enums:
            _intify_execution(body)
        return body

    def _job_body(self, job: FakeJob, now: float, int_enums: bool) -> Json:
        container: Json = {"image": job.image}
        if job.args:
            container["args"] = list(job.args)
        if job.env:
            container["env"] = [{"name": k, "value": v} for k, v in job.env.items()]
        execution_template: Json = {}
        if job.parallelism:
            execution_template["parallelism"] = job.parallelism
        execution_template["taskCount"] = job.task_count
        execution_template["template"] = {
            "containers": [container],
            "maxRetries": job.max_retries,
            "timeout": _duration(job.timeout_s),
            "executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
        }
        body: Json = {"name": job.name, "uid": job.uid, "generation": "1"}
        if job.labels:
            body["labels"] = dict(job.labels)
        if job.annotations:
            body["annotations"] = dict(job.annotations)
        body.update(
            createTime=_rfc3339(job.created_at),
            updateTime=_rfc3339(job.created_at),
            creator="someone@example.com",
            lastModifier="someone@example.com",
            launchStage="GA",
            template=execution_template,
            observedGeneration="1",
            terminalCondition={
                "type": "Ready",
                "state": "CONDITION_SUCCEEDED",
                "lastTransitionTime": _rfc3339(job.created_at),
            },
        )
        if job.execution_count:
            body["executionCount"] = job.execution_count
        if job.latest_execution is not None and job.latest_execution in self._executions:
            latest = self._executions[job.latest_execution]
            view = self._view(latest, now)
            reference: Json = {"name": latest.execution_id, "createTime": _rfc3339(latest.created_at)}
            if view.completion_time is not None:
                reference["completionTime"] = _rfc3339(view.completion_time)
            reference["completionStatus"] = {
                "succeeded": "EXECUTION_SUCCEEDED",
                "failed": "EXECUTION_FAILED",
                "cancelled": "EXECUTION_CANCELLED",
                "pending": "EXECUTION_PENDING",
            }.get(view.phase, "EXECUTION_RUNNING")
            body["latestCreatedExecution"] = reference
        body["etag"] = f'"{uuid.uuid5(uuid.NAMESPACE_URL, job.uid)}"'
        if int_enums:
            body["launchStage"] = _LAUNCH_STAGE[body["launchStage"]]
            _intify_conditions([body["terminalCondition"]])
            body["template"]["template"]["executionEnvironment"] = 2
            if "latestCreatedExecution" in body:
                status = body["latestCreatedExecution"]["completionStatus"]
                body["latestCreatedExecution"]["completionStatus"] = _COMPLETION_STATUS[status]
        return body

    def _operation_body(self, op: _Operation, now: float, int_enums: bool) -> Json:
        ex = self._executions[op.execution]
        view = self._view(ex, now)
        execution = {"@type": EXECUTION_TYPE_URL, **self._execution_body(ex, now, int_enums)}
        body: Json = {"name": op.name, "metadata": execution}
        done = view.finished
        if done:
            body["done"] = True
            if op.kind == "run" and view.phase == "failed":
                # Which canonical code Cloud Run puts here is not documented; UNKNOWN (2)
                # is a neutral choice. ork reads outcomes from the Execution, not this.
                body["error"] = {"code": 2, "message": view.message}
            else:
                body["response"] = execution
        return body


def _check_fields(obj: Any, allowed: set[str], where: str) -> None:
    """Reject unknown JSON fields the way Google's front end does."""
    if not isinstance(obj, dict):
        raise _ApiError(400, f"Invalid JSON payload received. Expected an object at '{where or 'request'}'.")
    for key in obj:
        if key not in allowed:
            at = f" at '{where}'" if where else ""
            raise _ApiError(400, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')


def _intify_conditions(conditions: list[Json]) -> None:
    for condition in conditions:
        for key, table in _CONDITION_ENUMS.items():
            if isinstance(condition.get(key), str):
                condition[key] = table[condition[key]]


def _intify_execution(body: Json) -> None:
    body["launchStage"] = _LAUNCH_STAGE[body["launchStage"]]
    body["template"]["executionEnvironment"] = 2
    _intify_conditions(body["conditions"])


__all__ = ["DEFAULT_FAIL_MESSAGE", "EXECUTION_TYPE_URL", "FakeCloudRun", "FakeExecution", "FakeJob", "RecordedRequest"]
