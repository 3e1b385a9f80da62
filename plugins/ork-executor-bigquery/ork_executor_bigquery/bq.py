"""Thin, typed layer between the ork BigQuery executor and ``google-cloud-bigquery``.

The executor never waits on a query in-process: it submits a job under a job
id that it derives deterministically from the task attempt and persists, then
polls that id, possibly from another process after a crash. Everything here
follows from that:

* :func:`submit_query` returns as soon as BigQuery has accepted the job, and a
  ``409 Conflict`` on the job id means "this attempt was already submitted":
  the existing job is adopted, never re-run.
* :func:`poll_job` is one cheap, non-blocking look at a job by id, so any
  process holding the id can track it.
* :func:`is_transient` separates "try again later" from real failures, so a
  tracker can back off instead of failing a task on a blip.

This module is imported only by the executor itself, not by the plugin's
registration module, so importing ``google.cloud.bigquery`` at the top keeps
``ork`` start-up fast for users who never run a BigQuery task.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast
from urllib.parse import quote, urlsplit

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_info import ClientInfo
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from google.cloud.bigquery.job import CopyJob, ExtractJob, LoadJob, QueryJob, UnknownJob
from google.oauth2 import service_account

__all__ = [
    "BIGQUERY_SCOPES",
    "CredentialsSpec",
    "JobIdReusedError",
    "JobState",
    "JobStatus",
    "QueryParameterValue",
    "SubmitResult",
    "cancel_job",
    "console_link",
    "dry_run_bytes",
    "is_transient",
    "make_client",
    "poll_job",
    "submit_query",
    "to_query_parameters",
]

BIGQUERY_SCOPES: Final[tuple[str, ...]] = (
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/cloud-platform",
)
USER_AGENT: Final = "ork-executor-bigquery"
"""Sent with every request, so BigQuery's audit logs show which jobs ork ran."""

DEFAULT_TIMEOUT_S: Final = 60.0
"""Per-HTTP-request timeout. Without one, a dead TCP connection can hang a
tracker indefinitely."""
DEFAULT_RETRY_DEADLINE_S: Final = 120.0
"""How long submission and cancellation retry transient errors in-call. The
client library's own default is 10 minutes, far longer than an orchestrator
should block one task slot."""

CredentialsSpec: TypeAlias = Literal["anonymous", "default"] | str
"""``"anonymous"`` (emulators), ``"default"`` (Application Default
Credentials) or the path of a service-account JSON key file."""

JobState: TypeAlias = Literal["running", "succeeded", "failed"]

ScalarValue: TypeAlias = (
    bool | int | float | str | decimal.Decimal | bytes | dt.date | dt.datetime
)
QueryParameterValue: TypeAlias = (
    ScalarValue
    | Sequence[ScalarValue]
    | bigquery.ScalarQueryParameter
    | bigquery.ArrayQueryParameter
)
AnyQueryParameter: TypeAlias = (
    bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter
)
AnyJob: TypeAlias = QueryJob | LoadJob | CopyJob | ExtractJob | UnknownJob
"""What ``Client.get_job`` can return: a job id may name any kind of job."""

_WRITE_DISPOSITIONS: Final = {
    "WRITE_TRUNCATE": "WRITE_TRUNCATE",
    "WRITE_APPEND": "WRITE_APPEND",
    "WRITE_EMPTY": "WRITE_EMPTY",
    "TRUNCATE": "WRITE_TRUNCATE",
    "APPEND": "WRITE_APPEND",
    "EMPTY": "WRITE_EMPTY",
}
_TRANSIENT_REASONS: Final = frozenset(
    {
        "rateLimitExceeded",
        "backendError",
        "internalError",
        "badGateway",
        "jobBackendError",
        "jobInternalError",
    }
)
"""BigQuery ``errors[].reason`` values that mean "try again" (as an API error)
or "run it again" (as a job's error). Rate limits in particular arrive as
403, which the HTTP status alone would call permanent."""
_TRANSIENT_HTTP_ERRORS: Final = (
    api_exceptions.TooManyRequests,  # 429
    api_exceptions.InternalServerError,  # 500
    api_exceptions.BadGateway,  # 502
    api_exceptions.ServiceUnavailable,  # 503
    api_exceptions.GatewayTimeout,  # 504
)
_TRANSIENT_TRANSPORT_ERRORS: Final = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)
_POSITION_RE: Final = re.compile(r"\bat \[(\d+):(\d+)\]")
"""BigQuery reports the position of a query error only inside the message,
as ``... at [LINE:COLUMN]``."""


class JobIdReusedError(RuntimeError):
    """The job id is taken by a different job than the one being submitted.

    Raised instead of adopting it: a job id derived from the wrong inputs
    would otherwise silently report another query's outcome as this task's.
    """


@dataclass(frozen=True)
class JobStatus:
    """One observation of a BigQuery job, in the terms the executor records."""

    job_id: str
    project: str
    location: str | None
    state: JobState
    rows_affected: int
    """DML affected rows; for a SELECT the result's total rows; else 0."""
    bytes_processed: int
    bytes_billed: int
    statement_type: str | None
    error_reason: str | None
    """BigQuery's machine-readable reason, e.g. ``invalidQuery``, ``stopped``."""
    error_message: str | None
    """BigQuery's own message, unchanged, so users see what the console shows."""
    error_location: str | None
    """BigQuery's ``errorResult.location``, e.g. ``query`` for a SQL error."""
    error_line: int | None
    error_column: int | None
    console_link: str
    query: str | None = None
    """The SQL as BigQuery received it, so an error can quote the offending lines even
    in a process that never rendered it (a tracker after ``ork resume``)."""

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def retryable_failure(self) -> bool:
        """The job failed for a reason on BigQuery's side, not the query's,
        so a new attempt (under a new job id) may well succeed."""
        return self.state == "failed" and self.error_reason in _TRANSIENT_REASONS


@dataclass(frozen=True)
class SubmitResult:
    """What the executor must persist after submission to track the job later."""

    job_id: str
    project: str
    location: str | None
    adopted: bool
    """True when the job id already existed (409) and that job was taken
    over: the query was not submitted a second time."""
    status: JobStatus
    """The job as BigQuery returned it on submission (for a dry run: the
    final, with the byte estimate)."""

    @property
    def console_link(self) -> str:
        return self.status.console_link


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


def _normalise_endpoint(api_endpoint: str) -> str:
    """Give a scheme-less endpoint one, as the client needs a full URL.

    Emulator conventions (``BIGQUERY_EMULATOR_HOST=127.0.0.1:9050``) omit the
    scheme, and the client would then build unusable URLs. Loopback hosts
    get ``http`` (local emulators do not speak TLS); anything else ``https``.
    """
    endpoint = api_endpoint.strip().rstrip("/")
    if "://" in endpoint:
        return endpoint
    host = urlsplit(f"//{endpoint}").hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return f"{'http' if loopback else 'https'}://{endpoint}"


def _load_credentials(spec: CredentialsSpec) -> auth_credentials.Credentials | None:
    if spec == "anonymous":
        return auth_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    if spec == "default":
        # None lets the client resolve Application Default Credentials itself.
        return None
    path = os.path.expanduser(spec)
    if not os.path.isfile(path):
        raise ValueError(
            "credentials must be 'anonymous', 'default' or the path of a service-account "
            f"JSON key file; there is no file at {spec!r}"
        )
    with open(path, encoding="utf-8") as handle:
        try:
            info = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"credentials file {spec!r} is not JSON: {exc}") from None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind != "service_account":
        # Only service-account keys are loaded from a path: other kinds
        # (external_account, impersonation) can point at executables or
        # URLs and are for ADC to handle, which the user opts into with
        # "default" plus GOOGLE_APPLICATION_CREDENTIALS.
        raise ValueError(
            f"credentials file {spec!r} is of type {kind!r}, not 'service_account'; "
            "for other credential kinds use credentials='default' with "
            "GOOGLE_APPLICATION_CREDENTIALS pointing at the file"
        )
    creds: service_account.Credentials = (
        service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=list(BIGQUERY_SCOPES)
        )
    )
    return creds


def make_client(
    project: str,
    location: str | None = None,
    api_endpoint: str | None = None,
    credentials: CredentialsSpec = "default",
) -> bigquery.Client:
    """Build a client for one project and default location.

    The project is always explicit: inferring it from credentials would let
    a task run (and bill) in whatever project the machine happens to be
    configured for.
    """
    options = (
        ClientOptions(api_endpoint=_normalise_endpoint(api_endpoint))
        if api_endpoint
        else None
    )
    return bigquery.Client(
        project=project,
        location=location,
        credentials=_load_credentials(credentials),
        client_options=options,
        client_info=ClientInfo(user_agent=USER_AGENT),  # type: ignore[no-untyped-call]
    )


# --------------------------------------------------------------------------
# Query parameters
# --------------------------------------------------------------------------


def _scalar_type(name: str, value: object) -> str:
    # Order matters: bool is an int, and datetime is a date.
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, dt.datetime):
        # An aware datetime is an instant (TIMESTAMP); a naive one is civil
        # time (DATETIME). Guessing TIMESTAMP for naive values would silently
        # shift them by the machine's UTC offset.
        return "TIMESTAMP" if value.utcoffset() is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if value is None:
        raise TypeError(
            f"query parameter {name!r} is None, whose BigQuery type cannot be inferred; "
            "pass bigquery.ScalarQueryParameter(name, TYPE, None) instead"
        )
    raise TypeError(
        f"query parameter {name!r} has unsupported type {type(value).__name__}; "
        "use bool, int, float, Decimal, str, bytes, date, datetime, a list of one of "
        "these, or a bigquery.ScalarQueryParameter / ArrayQueryParameter"
    )


def to_query_parameters(
    values: Mapping[str, QueryParameterValue],
) -> list[AnyQueryParameter]:
    """Turn ``{name: python_value}`` into typed named query parameters.

    Types are inferred so that DAG authors write plain YAML values; ready-made
    parameter objects pass through for the cases inference cannot decide
    (NULLs, GEOGRAPHY, an empty array).
    """
    params: list[AnyQueryParameter] = []
    for name, value in values.items():
        if isinstance(
            value, bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter
        ):
            if value.name != name:
                raise ValueError(
                    f"query parameter {name!r} is given an object named {value.name!r}"
                )
            params.append(value)
        elif isinstance(value, list | tuple):
            if not value:
                raise TypeError(
                    f"query parameter {name!r} is an empty list, whose element type cannot be "
                    "inferred; pass bigquery.ArrayQueryParameter(name, TYPE, []) instead"
                )
            types = {_scalar_type(name, item) for item in value}
            if types == {"INT64", "FLOAT64"}:
                types = {"FLOAT64"}
            if len(types) != 1:
                raise TypeError(
                    f"query parameter {name!r} mixes element types {sorted(types)}"
                )
            params.append(bigquery.ArrayQueryParameter(name, types.pop(), list(value)))
        else:
            params.append(
                # cast: the client's hint omits bytes, which it does serialise.
                bigquery.ScalarQueryParameter(
                    name, _scalar_type(name, value), cast(Any, value)
                )
            )
    return params


# --------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------


def _write_disposition(value: str) -> str:
    try:
        return _WRITE_DISPOSITIONS[value.strip().upper()]
    except KeyError:
        raise ValueError(
            f"write_disposition must be one of WRITE_TRUNCATE, WRITE_APPEND, WRITE_EMPTY; got {value!r}"
        ) from None


def _job_config(
    client: bigquery.Client,
    *,
    labels: Mapping[str, str] | None,
    query_parameters: Mapping[str, QueryParameterValue] | None,
    destination: str | None,
    write_disposition: str | None,
    dry_run: bool,
    maximum_bytes_billed: int | None,
    default_dataset: str | None,
) -> bigquery.QueryJobConfig:
    config = bigquery.QueryJobConfig(use_legacy_sql=False)
    if labels:
        config.labels = dict(labels)
    if query_parameters:
        config.query_parameters = to_query_parameters(query_parameters)
    if destination is not None:
        config.destination = bigquery.TableReference.from_string(
            destination, default_project=client.project
        )
    if write_disposition is not None:
        if destination is None:
            # It would then only apply to BigQuery's anonymous result table:
            # a WRITE_TRUNCATE with no visible effect is a surprise nobody
            # wants to debug.
            raise ValueError("write_disposition needs a destination table")
        config.write_disposition = _write_disposition(write_disposition)
    if dry_run:
        config.dry_run = True
        # A cached result would make the estimate 0 bytes.
        config.use_query_cache = False
    if maximum_bytes_billed is not None:
        if maximum_bytes_billed <= 0:
            raise ValueError("maximum_bytes_billed must be positive")
        config.maximum_bytes_billed = maximum_bytes_billed
    if default_dataset is not None:
        config.default_dataset = bigquery.DatasetReference.from_string(
            default_dataset, default_project=client.project
        )
    return config


def _retry(deadline: float) -> Retry:
    return Retry(
        predicate=is_transient,
        initial=0.5,
        maximum=10.0,
        multiplier=2.0,
        timeout=deadline,
    )


def _adoption_retry(deadline: float) -> Retry:
    """Retry for the get after a 409: BigQuery can answer 404 for a job it
    has just reported as existing, until its metadata has propagated."""

    def predicate(exc: BaseException) -> bool:
        return isinstance(exc, api_exceptions.NotFound) or is_transient(exc)

    return Retry(
        predicate=predicate, initial=0.5, maximum=5.0, multiplier=2.0, timeout=deadline
    )


def _normalise_sql(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def submit_query(
    client: bigquery.Client,
    sql: str,
    *,
    job_id: str,
    location: str | None = None,
    labels: Mapping[str, str] | None = None,
    query_parameters: Mapping[str, QueryParameterValue] | None = None,
    destination: str | None = None,
    write_disposition: str | None = None,
    dry_run: bool = False,
    maximum_bytes_billed: int | None = None,
    default_dataset: str | None = None,
    project: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_deadline: float = DEFAULT_RETRY_DEADLINE_S,
    check_adopted_sql: bool = True,
) -> SubmitResult:
    """Start a query job under ``job_id`` and return without waiting for it.

    Submitting is idempotent per ``job_id``. If BigQuery answers ``409
    Conflict`` (the job exists: an earlier attempt, or an earlier
    in-call retry whose response was lost, got through), the existing job is
    fetched and returned with ``adopted=True``. So re-running the submission
    after a crash tracks the first job instead of running the query twice.
    With ``check_adopted_sql`` an existing job whose SQL differs raises
    :class:`JobIdReusedError`.

    Transient errors are retried with the same job id for ``retry_deadline``
    seconds, which is safe precisely because of the 409 adoption; anything
    still failing is raised (see :func:`is_transient`).
    """
    config = _job_config(
        client,
        labels=labels,
        query_parameters=query_parameters,
        destination=destination,
        write_disposition=write_disposition,
        dry_run=dry_run,
        maximum_bytes_billed=maximum_bytes_billed,
        default_dataset=default_dataset,
    )
    project = project or client.project
    adopted = False
    try:
        job = client.query(
            sql,
            job_config=config,
            job_id=job_id,
            location=location,
            project=project,
            retry=_retry(retry_deadline),
            timeout=timeout,
            # A job id cannot be re-used for a re-run, so the client's
            # restart-the-query retry must be off (it warns otherwise).
            job_retry=None,
        )
    except api_exceptions.Conflict:
        existing = client.get_job(
            job_id,
            project=project,
            location=location,
            retry=_adoption_retry(retry_deadline),
            timeout=timeout,
        )
        if not isinstance(existing, QueryJob):
            raise JobIdReusedError(
                f"job id {job_id!r} belongs to a {type(existing).__name__}, not a query job"
            ) from None
        if check_adopted_sql and _normalise_sql(existing.query or "") != _normalise_sql(
            sql
        ):
            raise JobIdReusedError(
                f"job id {job_id!r} already exists for a different query; refusing to adopt it"
            ) from None
        job = existing
        adopted = True
    status = _status_from_job(job, project=project, location=location, rows=None)
    return SubmitResult(
        job_id=status.job_id,
        project=status.project,
        location=status.location,
        adopted=adopted,
        status=status,
    )


def dry_run_bytes(
    client: bigquery.Client,
    sql: str,
    *,
    location: str | None = None,
    query_parameters: Mapping[str, QueryParameterValue] | None = None,
    default_dataset: str | None = None,
    project: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Return the bytes BigQuery estimates the query would process.

    A dry run is free and also validates the SQL: an invalid query raises
    ``google.api_core.exceptions.BadRequest`` with BigQuery's message, which
    makes this usable as a pre-flight check.
    """
    config = _job_config(
        client,
        labels=None,
        query_parameters=query_parameters,
        destination=None,
        write_disposition=None,
        dry_run=True,
        maximum_bytes_billed=None,
        default_dataset=default_dataset,
    )
    job = client.query(
        sql,
        job_config=config,
        location=location,
        project=project or client.project,
        retry=_retry(DEFAULT_RETRY_DEADLINE_S),
        timeout=timeout,
        job_retry=None,
    )
    return int(job.total_bytes_processed or 0)


# --------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------


def console_link(project: str, location: str | None, job_id: str) -> str:
    """Link to the job's page in the Google Cloud console."""
    job = f"bq:{location or 'US'}:{job_id}"
    return (
        "https://console.cloud.google.com/bigquery"
        f"?project={quote(project, safe='')}&j={quote(job, safe=':')}&page=queryresults"
    )


def _state_of(job: AnyJob) -> JobState:
    if job.state != "DONE":
        # PENDING counts as running: both can still finish either way.
        return "running"
    return "failed" if job.error_result else "succeeded"


def _status_from_job(
    job: AnyJob, *, project: str, location: str | None, rows: int | None
) -> JobStatus:
    state = _state_of(job)
    job_location = job.location or location
    job_project = job.project or project
    error = job.error_result or {}
    message = error.get("message")
    line = column = None
    if message:
        match = _POSITION_RE.search(message)
        if match:
            line, column = int(match.group(1)), int(match.group(2))
    if isinstance(job, QueryJob):
        dml = job.num_dml_affected_rows
        bytes_processed = job.total_bytes_processed or 0
        bytes_billed = job.total_bytes_billed or 0
        statement_type = job.statement_type
    else:
        dml = None
        bytes_processed = bytes_billed = 0
        statement_type = None
    if dml is not None:
        rows_affected = int(dml)
    else:
        rows_affected = rows or 0
    return JobStatus(
        job_id=str(job.job_id),
        project=job_project,
        location=job_location,
        state=state,
        rows_affected=rows_affected,
        bytes_processed=int(bytes_processed),
        bytes_billed=int(bytes_billed),
        statement_type=statement_type,
        error_reason=error.get("reason"),
        error_message=message,
        error_location=error.get("location"),
        error_line=line,
        error_column=column,
        console_link=console_link(job_project, job_location, str(job.job_id)),
        query=job.query if isinstance(job, QueryJob) else None,
    )


def poll_job(
    client: bigquery.Client,
    job_id: str,
    location: str | None = None,
    *,
    project: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry: Retry | None = None,
    count_result_rows: bool = True,
) -> JobStatus:
    """Look at a job once, without waiting for it to finish.

    By default nothing is retried: a transient error is raised at once so the
    caller's tracker, which polls again anyway, decides how long to back off
    (:func:`is_transient`) instead of this call blocking for minutes. A job
    BigQuery does not know raises ``google.api_core.exceptions.NotFound``.

    For a finished SELECT the result's row count is not part of the job
    resource; with ``count_result_rows`` one more request
    (``jobs.getQueryResults`` with ``maxResults=0``) fetches it.
    """
    project = project or client.project
    # The client documents retry=None as "no retry" but types it as Retry.
    call_retry = cast(Retry, retry)
    job = client.get_job(
        job_id, project=project, location=location, retry=call_retry, timeout=timeout
    )
    rows: int | None = None
    if (
        count_result_rows
        and isinstance(job, QueryJob)
        and _state_of(job) == "succeeded"
        and job.statement_type == "SELECT"
        and not job.dry_run
    ):
        result = job.result(max_results=0, retry=call_retry, timeout=timeout)
        rows = result.total_rows
    return _status_from_job(job, project=project, location=location, rows=rows)


def cancel_job(
    client: bigquery.Client,
    job_id: str,
    location: str | None = None,
    *,
    project: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retry_deadline: float = DEFAULT_RETRY_DEADLINE_S,
) -> None:
    """Ask BigQuery to cancel a job; safe to call any number of times.

    Cancelling is asynchronous on BigQuery's side: the job ends some time
    later with ``error_reason == "stopped"``, so callers poll for the end.
    A job that already finished is left as it is, and an unknown job id
    (never created, or expired) is not an error: in both cases there is
    nothing left to stop.
    """
    try:
        client.cancel_job(
            job_id,
            project=project or client.project,
            location=location,
            retry=_retry(retry_deadline),
            timeout=timeout,
        )
    except api_exceptions.NotFound:
        return


def is_transient(exc: BaseException) -> bool:
    """Whether an error from this module is worth retrying later.

    True for overload and server errors (429, 500, 502, 503, 504), for
    BigQuery's retryable reasons even under another status (rate limits
    come as 403 ``rateLimitExceeded``) and for network failures, including
    ones while refreshing credentials. False for everything else, notably
    bad SQL, permissions, a missing job and quota exhaustion.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, api_exceptions.RetryError):
            current = current.cause
            continue
        if isinstance(current, requests.exceptions.SSLError):
            return False  # a TLS misconfiguration will not heal by itself
        if isinstance(current, _TRANSIENT_HTTP_ERRORS + _TRANSIENT_TRANSPORT_ERRORS):
            return True
        if isinstance(current, auth_exceptions.RefreshError):
            return bool(getattr(current, "retryable", False))
        if isinstance(current, api_exceptions.GoogleAPICallError):
            reasons = {
                err.get("reason")
                for err in (current.errors or [])
                if isinstance(err, Mapping)
            }
            return bool(reasons & _TRANSIENT_REASONS)
        # Only explicit chaining (``raise ... from``): an unrelated error
        # raised while handling a network error is not itself transient.
        current = current.__cause__
    return False
