"""A thin, typed layer over ``google.cloud.run_v2`` for running ork tasks as Cloud Run job executions.

Why this layer exists:

* the executor should think in ork terms (an execution name, a status with a few
  states, a handful of error kinds) and never handle protobufs or
  ``google.api_core`` exceptions itself;
* the outcome of an execution is read from the **Execution resource**
  (``completionTime``, task counters, the ``Completed`` condition), never from the
  long-running operation ``RunJob`` returns. The operation is a poor source of truth:
  a cancelled execution ends its operation *without* an error, and the operation's
  JSON parser rejects any field newer than the installed client knows, so polling
  the operation can break when Google adds a field to ``Execution``;
* ``run_job`` must not be retried blindly (a lost answer may still have started an
  execution), so errors are classified here and the crash-safe path is
  :func:`find_execution_by_env`.

All calls use the REST transport with an explicit per-request timeout, so a hung
endpoint surfaces as a :class:`CloudRunTransientError` rather than a hung worker.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Self, Union

from google.cloud import run_v2

__all__ = [
    "CloudRunClients",
    "CloudRunConfigError",
    "CloudRunError",
    "CloudRunNotFoundError",
    "CloudRunPermissionDeniedError",
    "CloudRunTransientError",
    "CredentialsSpec",
    "ExecutionState",
    "ExecutionStatus",
    "cancel_execution",
    "execution_console_link",
    "find_execution_by_env",
    "get_execution_status",
    "latest_execution",
    "make_clients",
    "parse_execution_name",
    "run_job",
    "status_from_execution",
]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_REQUEST_TIMEOUT_S = 30.0

ExecutionState = Literal["running", "succeeded", "failed", "cancelled"]
CredentialsSpec = Union[Literal["anonymous", "default"], str, "os.PathLike[str]"]  # a path: a credentials file

# Cloud Run resource IDs: lowercase letters, digits and hyphens, starting with a letter.
_RESOURCE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_JOB_NAME = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs/(?P<job>[^/]+)$")
_EXECUTION_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs/(?P<job>[^/]+)/executions/(?P<execution>[^/]+)$"
)


# --------------------------------------------------------------------------- errors


class CloudRunError(Exception):
    """Base of every error this module raises, so the executor needs one ``except``.

    ``retryable`` tells a poller whether asking again later can help; ``code`` is the
    HTTP status when the API answered at all.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: str | None = None,
        project: str | None = None,
        region: str | None = None,
        job: str | None = None,
        execution: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.project = project
        self.region = region
        self.job = job
        self.execution = execution


class CloudRunNotFoundError(CloudRunError):
    """The job (or execution) does not exist where we looked: usually a typo in job, project or region."""


class CloudRunPermissionDeniedError(CloudRunError):
    """The credentials lack a Cloud Run permission (or are rejected): retrying will not help."""


class CloudRunTransientError(CloudRunError):
    """503/429/500/504, a timeout or a connection failure: try again later.

    Raised by :func:`run_job` it means the outcome is *unknown*: an execution may have
    started. Adopt it with :func:`find_execution_by_env` instead of running again.
    """

    retryable = True


class CloudRunConfigError(CloudRunError, ValueError):
    """Bad input from configuration (malformed names, unusable credentials)."""


# ------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class CloudRunClients:
    """The two v2 clients plus the project/region they address, passed to every call here."""

    project: str
    region: str
    jobs: run_v2.JobsClient
    executions: run_v2.ExecutionsClient
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    def job_path(self, job: str) -> str:
        """Full resource name for a short job ID; full names are checked against our project/region."""
        match = _JOB_NAME.fullmatch(job)
        if match is not None:
            if (match["project"], match["region"]) != (self.project, self.region):
                raise CloudRunConfigError(
                    f"job {job!r} is outside the configured project {self.project!r} / region {self.region!r}",
                    project=self.project,
                    region=self.region,
                    job=job,
                )
            return job
        if not _RESOURCE_ID.fullmatch(job):
            raise CloudRunConfigError(
                f"invalid Cloud Run job name {job!r}: use lowercase letters, digits and hyphens, "
                "starting with a letter, at most 63 characters",
                project=self.project,
                region=self.region,
                job=job,
            )
        return f"projects/{self.project}/locations/{self.region}/jobs/{job}"

    def close(self) -> None:
        """Release the HTTP sessions; the clients are unusable afterwards."""
        self.jobs.transport.close()  # type: ignore[no-untyped-call]
        self.executions.transport.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _load_credentials(credentials: CredentialsSpec) -> Any:
    from google.auth import exceptions as auth_exceptions

    if credentials == "anonymous":
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    try:
        if credentials == "default":
            import google.auth

            creds, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            return creds
        path = os.fspath(credentials)
        return _credentials_from_file(path)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise CloudRunConfigError(f"cannot load Google credentials ({credentials!s}): {exc}") from exc


def _credentials_from_file(path: str) -> Any:
    """Load a service-account (or gcloud user) key file.

    Only these two types are accepted: a generic loader would also run the commands or
    fetch the URLs an external-account file names, which a config file should not be
    able to make ork do.
    """
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except FileNotFoundError:
        raise CloudRunConfigError(f"credentials file {path!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise CloudRunConfigError(f"credentials file {path!r} is not readable JSON: {exc}") from exc
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        if kind == "authorized_user":
            return user_credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
    except ValueError as exc:
        raise CloudRunConfigError(f"credentials file {path!r} is malformed: {exc}") from exc
    raise CloudRunConfigError(
        f"credentials file {path!r} has type {kind!r}; expected 'service_account' or 'authorized_user'"
    )


def make_clients(
    project: str,
    region: str,
    api_endpoint: str | None = None,
    credentials: CredentialsSpec = "default",
    *,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> CloudRunClients:
    """Build REST clients for one project/region.

    ``api_endpoint`` may carry a scheme (``http://127.0.0.1:PORT`` for tests); without
    one the client uses HTTPS. ``credentials`` is ``"anonymous"``, ``"default"``
    (Application Default Credentials) or a path to a credentials JSON file.
    REST rather than gRPC: it needs no grpc runtime and is what the test fake speaks.
    """
    if not project or not region:
        raise CloudRunConfigError("both a Cloud Run project and region are required", project=project, region=region)
    creds = _load_credentials(credentials)
    options: dict[str, Any] = {}
    if api_endpoint:
        options["api_endpoint"] = api_endpoint
    jobs = run_v2.JobsClient(transport="rest", credentials=creds, client_options=options or None)
    executions = run_v2.ExecutionsClient(transport="rest", credentials=creds, client_options=options or None)
    return CloudRunClients(
        project=project, region=region, jobs=jobs, executions=executions, request_timeout_s=request_timeout_s
    )


# ------------------------------------------------------------------ error mapping


@contextmanager
def _translated(
    clients: CloudRunClients,
    *,
    action: str,
    permission: str,
    job: str | None = None,
    execution: str | None = None,
) -> Iterator[None]:
    """Turn google-api-core / transport exceptions into CloudRunError subclasses with context."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    try:
        yield
    except CloudRunError:
        raise
    except gexc.GoogleAPICallError as exc:
        raise _from_api_error(exc, clients, action=action, permission=permission, job=job, execution=execution) from exc
    except gexc.RetryError as exc:
        raise CloudRunTransientError(
            f"Cloud Run did not answer in time while trying to {action}: {exc}",
            project=clients.project,
            region=clients.region,
            job=job,
            execution=execution,
        ) from exc
    except (requests.ConnectionError, requests.Timeout, auth_exceptions.TransportError) as exc:
        raise CloudRunTransientError(
            f"could not reach the Cloud Run API while trying to {action}: {exc}",
            project=clients.project,
            region=clients.region,
            job=job,
            execution=execution,
        ) from exc
    except auth_exceptions.RefreshError as exc:
        raise CloudRunPermissionDeniedError(
            f"the Google credentials could not be refreshed while trying to {action}: {exc}",
            project=clients.project,
            region=clients.region,
            job=job,
            execution=execution,
        ) from exc


def _from_api_error(
    exc: Any,
    clients: CloudRunClients,
    *,
    action: str,
    permission: str,
    job: str | None,
    execution: str | None,
) -> CloudRunError:
    from google.api_core import exceptions as gexc

    grpc_code = getattr(exc, "grpc_status_code", None)
    status = getattr(grpc_code, "name", None)
    http_code = exc.code if isinstance(exc.code, int) else None
    where = f"project {clients.project!r}, region {clients.region!r}"
    context: dict[str, Any] = {
        "code": http_code,
        "status": status,
        "project": clients.project,
        "region": clients.region,
        "job": job,
        "execution": execution,
    }
    detail = exc.message or str(exc)
    if isinstance(exc, gexc.NotFound):
        subject = f"execution {execution!r}" if execution else f"job {job!r}"
        return CloudRunNotFoundError(
            f"Cloud Run {subject} was not found in {where} (while trying to {action}): {detail}", **context
        )
    if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
        subject = f"execution {execution!r}" if execution else f"job {job!r}"
        return CloudRunPermissionDeniedError(
            f"permission denied on Cloud Run {subject} in {where} (while trying to {action}); the "
            f"credentials need {permission!r} (roles/run.developer grants it): {detail}",
            **context,
        )
    if isinstance(
        exc,
        (gexc.ServiceUnavailable, gexc.TooManyRequests, gexc.InternalServerError, gexc.GatewayTimeout),
    ):
        return CloudRunTransientError(f"Cloud Run is temporarily unable to {action} ({http_code}): {detail}", **context)
    return CloudRunError(f"Cloud Run refused to {action} ({http_code} {status or ''}): {detail}".strip(), **context)


# ----------------------------------------------------------------------- names


def parse_execution_name(execution_name: str) -> dict[str, str]:
    """Split a full execution name into project, region, job and execution IDs."""
    match = _EXECUTION_NAME.fullmatch(execution_name)
    if match is None:
        raise CloudRunConfigError(
            f"not a Cloud Run execution name: {execution_name!r} (expected projects/P/locations/R/jobs/J/executions/E)",
            execution=execution_name,
        )
    return match.groupdict()


def _same_execution(a: str, b: str) -> bool:
    """Compare by job and execution ID, since the API may spell the project by number or by ID."""
    pa, pb = _EXECUTION_NAME.fullmatch(a), _EXECUTION_NAME.fullmatch(b)
    if pa is None or pb is None:
        return a == b
    return (pa["region"], pa["job"], pa["execution"]) == (pb["region"], pb["job"], pb["execution"])


def execution_console_link(execution_name: str) -> str:
    """Where a person looks at the execution's tasks in the Google Cloud console."""
    parts = parse_execution_name(execution_name)
    return (
        f"https://console.cloud.google.com/run/jobs/executions/details/"
        f"{parts['region']}/{parts['execution']}/tasks?project={parts['project']}"
    )


# ---------------------------------------------------------------------- actions


def run_job(
    clients: CloudRunClients,
    job: str,
    *,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    task_count: int | None = None,
    parallelism: int | None = None,
    timeout_s: float | None = None,
) -> str:
    """Start one execution of ``job`` and return its full name without waiting for it.

    ``args`` replaces the container's arguments (an empty sequence clears them; ``None``
    keeps the job's). ``env`` is merged over the job's environment; put an idempotency
    key there so the execution can be adopted after a crash. ``timeout_s`` is the
    per-task timeout. ``task_count`` and ``timeout_s`` of ``None`` keep the job's values.

    ``parallelism`` cannot be overridden per execution: ``RunJobRequest.Overrides`` has
    no such field. It is accepted so callers can state their expectation, and is
    checked against the job (one extra GET) so a mismatch fails loudly instead of
    silently running with a different fan-out.

    The name comes from the operation's *metadata*, which Cloud Run fills with the new
    Execution as soon as it is created.
    """
    job_path = clients.job_path(job)
    if task_count is not None and task_count < 1:
        raise CloudRunConfigError(f"task_count must be at least 1, got {task_count}", job=job)
    if timeout_s is not None and timeout_s <= 0:
        raise CloudRunConfigError(f"timeout_s must be positive, got {timeout_s}", job=job)
    if parallelism is not None:
        _check_parallelism(clients, job_path, parallelism)

    container = run_v2.RunJobRequest.Overrides.ContainerOverride()
    touched = False
    if args is not None:
        if isinstance(args, str):
            raise CloudRunConfigError("args must be a sequence of strings, not one string", job=job)
        container.args = list(args)
        container.clear_args = not args
        touched = True
    if env:
        container.env = [run_v2.EnvVar(name=k, value=v) for k, v in env.items()]
        touched = True
    overrides = run_v2.RunJobRequest.Overrides()
    if touched:
        overrides.container_overrides = [container]
    if task_count is not None:
        overrides.task_count = task_count
    if timeout_s is not None:
        overrides.timeout = timedelta(seconds=timeout_s)  # proto-plus marshals it to a Duration
    request = run_v2.RunJobRequest(name=job_path)
    if touched or task_count is not None or timeout_s is not None:
        # Leave the field unset otherwise: the job's own configuration then applies as is.
        request.overrides = overrides

    # Any override needs a permission of its own, which roles/run.invoker lacks.
    permission = "run.jobs.runWithOverrides" if "overrides" in request else "run.jobs.run"
    with _translated(clients, action="run the job", permission=permission, job=job_path):
        operation = clients.jobs.run_job(request=request, timeout=clients.request_timeout_s)
    metadata = operation.metadata
    name = getattr(metadata, "name", "") if metadata is not None else ""
    if not name:
        raise CloudRunError(
            f"Cloud Run accepted the run of {job_path!r} but its operation {operation.operation.name!r} "
            "names no execution in its metadata",
            project=clients.project,
            region=clients.region,
            job=job_path,
        )
    return str(name)


def _check_parallelism(clients: CloudRunClients, job_path: str, parallelism: int) -> None:
    with _translated(clients, action="read the job", permission="run.jobs.get", job=job_path):
        job = clients.jobs.get_job(name=job_path, timeout=clients.request_timeout_s)
    configured = int(job.template.parallelism)
    # 0 means "as many as the task count allows" on both sides.
    if configured != parallelism:
        raise CloudRunConfigError(
            f"job {job_path!r} is configured with parallelism {configured} but {parallelism} was requested; "
            "Cloud Run cannot override parallelism per execution, so update the job "
            f"(gcloud run jobs update {job_path.rsplit('/', 1)[-1]} --parallelism {parallelism})",
            project=clients.project,
            region=clients.region,
            job=job_path,
        )


def latest_execution(clients: CloudRunClients, job: str) -> str | None:
    """Name of the job's newest execution, or ``None`` if it has none.

    Recorded before :func:`run_job` so that adoption after a crash only looks at
    executions created after that point.
    """
    job_path = clients.job_path(job)
    request = run_v2.ListExecutionsRequest(parent=job_path, page_size=1)
    with _translated(clients, action="list the job's executions", permission="run.executions.list", job=job_path):
        pager = clients.executions.list_executions(request=request, timeout=clients.request_timeout_s)
        for execution in pager.executions:  # first page only
            return str(execution.name)
    return None


def find_execution_by_env(
    clients: CloudRunClients,
    job: str,
    name: str,
    value: str,
    newer_than: str | None = None,
    *,
    max_scanned: int = 500,
    page_size: int = 50,
) -> str | None:
    """Find the newest execution of ``job`` whose container ran with ``name=value`` in its env.

    Used to adopt an execution whose ``run_job`` answer was lost (crash, timeout).
    Executions are listed newest first; the scan stops at ``newer_than`` (an execution
    name recorded before the run, itself excluded) or after ``max_scanned`` executions,
    so a job with a long history costs a bounded number of pages. The env is read from
    ``Execution.template.containers[].env``, where Cloud Run records the overrides the
    execution was started with.
    """
    job_path = clients.job_path(job)
    request = run_v2.ListExecutionsRequest(parent=job_path, page_size=page_size)
    scanned = 0
    with _translated(clients, action="list the job's executions", permission="run.executions.list", job=job_path):
        pager = clients.executions.list_executions(request=request, timeout=clients.request_timeout_s)
        for execution in pager:
            if newer_than is not None and _same_execution(execution.name, newer_than):
                return None
            for container in execution.template.containers:
                if any(var.name == name and var.value == value for var in container.env):
                    return str(execution.name)
            scanned += 1
            if scanned >= max_scanned:
                return None
    return None


@dataclass(frozen=True)
class ExecutionStatus:
    """What ork needs to know about an execution, free of protobuf types."""

    state: ExecutionState
    task_count: int
    succeeded_count: int
    failed_count: int
    cancelled_count: int
    running_count: int
    start_time: str | None
    completion_time: str | None
    log_uri: str
    message: str
    console_link: str
    execution_name: str = ""

    @property
    def terminal(self) -> bool:
        return self.state != "running"


def get_execution_status(clients: CloudRunClients, execution_name: str) -> ExecutionStatus:
    """Read one execution and classify it; transient failures raise CloudRunTransientError."""
    parse_execution_name(execution_name)
    with _translated(clients, action="read the execution", permission="run.executions.get", execution=execution_name):
        execution = clients.executions.get_execution(name=execution_name, timeout=clients.request_timeout_s)
    return status_from_execution(execution)


def status_from_execution(execution: run_v2.Execution) -> ExecutionStatus:
    """Classify an Execution by its own fields.

    An execution is finished exactly when ``completionTime`` is set. Then the
    ``Completed`` condition says how, with the counters as a cross-check (and as the
    whole answer when the condition is missing or still reconciling): a cancel shows
    as ``executionReason: CANCELLED`` and/or cancelled tasks, a success needs every
    task succeeded, anything else is a failure.
    """
    Condition = run_v2.Condition
    completed = next((c for c in execution.conditions if c.type_ == "Completed"), None)
    task_count = int(execution.task_count)
    succeeded = int(execution.succeeded_count)
    failed = int(execution.failed_count)
    cancelled = int(execution.cancelled_count)
    running = int(execution.running_count)

    message = ""
    cond_state = Condition.State.STATE_UNSPECIFIED
    reason = Condition.ExecutionReason.EXECUTION_REASON_UNDEFINED
    if completed is not None:
        cond_state = Condition.State(completed.state)
        reason = Condition.ExecutionReason(completed.execution_reason)
        message = completed.message or ""
        if not message:
            if reason != Condition.ExecutionReason.EXECUTION_REASON_UNDEFINED:
                message = reason.name
            elif completed.reason:
                message = Condition.CommonReason(completed.reason).name

    state: ExecutionState = "running"
    if execution.completion_time is not None:
        all_succeeded = task_count > 0 and succeeded >= task_count and failed == 0 and cancelled == 0
        if reason == Condition.ExecutionReason.CANCELLED:
            state = "cancelled"
        elif cond_state == Condition.State.CONDITION_SUCCEEDED and failed == 0:
            state = "succeeded"
        elif cond_state == Condition.State.CONDITION_FAILED:
            state = "cancelled" if cancelled and not failed else "failed"
        elif all_succeeded:
            state = "succeeded"
        elif failed:
            state = "failed"
        elif cancelled:
            state = "cancelled"
        # else: completion time without any outcome in condition or counters; keep
        # polling rather than guess.
    if state == "failed" and not message:
        message = f"{failed} of {task_count} task(s) failed"
    if state == "cancelled" and not message:
        message = "the execution was cancelled"

    name = str(execution.name)
    return ExecutionStatus(
        state=state,
        task_count=task_count,
        succeeded_count=succeeded,
        failed_count=failed,
        cancelled_count=cancelled,
        running_count=running,
        start_time=_iso(execution.start_time),
        completion_time=_iso(execution.completion_time),
        log_uri=str(execution.log_uri),
        message=message,
        console_link=execution_console_link(name) if _EXECUTION_NAME.fullmatch(name) else "",
        execution_name=name,
    )


def _iso(value: Any) -> str | None:
    """proto-plus reads an unset Timestamp as None and a set one as an aware datetime."""
    if value is None:
        return None
    return str(value.isoformat())


def cancel_execution(clients: CloudRunClients, execution_name: str) -> None:
    """Ask Cloud Run to cancel an execution; safe to call any number of times.

    Returns once the request is accepted (cancellation completes asynchronously; poll
    :func:`get_execution_status`). An execution that no longer exists, or that already
    finished, counts as done.
    """
    from google.api_core import exceptions as gexc

    parse_execution_name(execution_name)
    try:
        with _translated(
            clients, action="cancel the execution", permission="run.executions.cancel", execution=execution_name
        ):
            try:
                clients.executions.cancel_execution(name=execution_name, timeout=clients.request_timeout_s)
            except gexc.NotFound:
                return
    except CloudRunError as err:
        # Cloud Run refuses to cancel a finished execution (400/409, FAILED_PRECONDITION):
        # that is the outcome the caller wanted, so confirm it and return.
        if err.code not in (400, 409):
            raise
        if get_execution_status(clients, execution_name).terminal:
            return
        raise
