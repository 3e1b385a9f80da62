"""The ``cloudrun`` executor: a task is one execution of a Cloud Run Job.

``run`` only *starts* the execution and hands it to ork as a ``Deferred``; the
``cloudrun`` job tracker (``tracker.py``) follows it to the end. Nothing waits in a
worker thread for minutes, and a restarted ork polls the committed execution again
instead of starting another.

Cloud Run does not let the caller choose an execution id, so a lost ``:run`` answer
(ork killed, a 503 after the execution was created) cannot be retried blindly. Every
execution therefore carries the task's idempotency key in ``ORK_IDEMPOTENCY_KEY``,
and both the in-run recovery and ``adopt`` (after ``ork resume``) look for an
execution with that key before they would start one.

``google.cloud.run_v2`` is imported on first use only (``api`` is imported inside the
methods), so ``ork validate`` checks Cloud Run tasks without loading it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from ork import Context, Deferred, Problem, TaskError, executor, load_task_config
from ork_core.templating import ork_variables, render_value

if TYPE_CHECKING:
    from ork import TaskWhere
    from ork_executor_cloudrun.api import CloudRunClients, CloudRunError

__all__ = [
    "ENV_IDEMPOTENCY_KEY",
    "ENV_RUN_ID",
    "ENV_TASK",
    "CloudRunConfig",
    "CloudRunExecutor",
    "CloudRunOutput",
    "CloudRunTask",
]

TRACKER = "cloudrun"
ENV_RUN_ID = "ORK_RUN_ID"
ENV_TASK = "ORK_TASK"
ENV_IDEMPOTENCY_KEY = "ORK_IDEMPOTENCY_KEY"
_ORK_ENV = (ENV_RUN_ID, ENV_TASK, ENV_IDEMPOTENCY_KEY)

# Waits between attempts when Cloud Run answers 503/429/timeout. Submitting is retried
# only after a lookup proved the previous attempt created nothing.
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)

_JOB_ID = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_JOB_FULL = re.compile(r"^projects/[^/]+/locations/[^/]+/jobs/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_JOB_HELP = (
    "a Cloud Run job name (lowercase letters, digits and hyphens, starting with a letter, at most 63 "
    "characters) or a full name 'projects/P/locations/R/jobs/J'"
)


def _check_job(value: str | None) -> str | None:
    if value is None or "{{" in value or "{%" in value:  # a template is checked once rendered
        return value
    if not (_JOB_ID.fullmatch(value) or _JOB_FULL.fullmatch(value)):
        raise ValueError(f"{value!r} is not {_JOB_HELP}")
    return value


class CloudRunConfig(BaseModel):
    """Settings under ``executors.<name>.config`` in ork.yaml for ``type: cloudrun``."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1)
    """Google Cloud project id (or number) that owns the jobs."""
    region: str = Field(min_length=1)
    """Cloud Run region of the jobs, e.g. ``europe-west1``."""
    job: str | None = None
    """Job a task runs when it names none itself."""
    api_endpoint: str | None = None
    """Another API endpoint, e.g. ``http://127.0.0.1:8080`` for a local fake; default: Google's."""
    credentials: str = "default"
    """``default`` (Application Default Credentials), ``anonymous`` (local servers only), or the
    path of a service-account or authorized-user JSON key file."""
    poll_interval: PositiveFloat = 10.0
    """Seconds between two status checks of running executions."""
    request_timeout: PositiveFloat = 30.0
    """Seconds one API request may take before it counts as a transient failure."""

    @field_validator("job")
    @classmethod
    def _valid_job(cls, value: str | None) -> str | None:
        return _check_job(value)

    @field_validator("credentials")
    @classmethod
    def _credentials_exist(cls, value: str) -> str:
        if value in ("default", "anonymous"):
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(
                f"must be 'default', 'anonymous' or the path of a credentials JSON file; {str(path)!r} is not a file"
            )
        return str(path.resolve())


class CloudRunTask(BaseModel):
    """The keys a ``cloudrun`` task may set inline in the workflow or in its ``config_file``.

    The task's ``env:`` (an ork key every task has) becomes the container's environment;
    ``env`` here is only for a ``config_file``, and the task's ``env:`` wins over it.
    ``timeout:`` stays ork's timeout for the whole task (ork cancels the execution when it
    passes); Cloud Run's own per-task timeout is ``task_timeout``.
    """

    model_config = ConfigDict(extra="forbid")

    job: str | None = None
    """Cloud Run job to execute; default: the executor's ``job``."""
    args: list[str] | None = None
    """Container arguments for this execution (``[]`` clears the job's); default: the job's."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables (from a config_file; inline, use the task's ``env:``)."""
    task_count: PositiveInt | None = None
    """How many tasks the execution runs; default: the job's."""
    parallelism: NonNegativeInt | None = None
    """Expected parallelism. Cloud Run cannot override it per execution, so it is checked
    against the job and a mismatch fails the task instead of running differently."""
    task_timeout: PositiveFloat | None = None
    """Cloud Run's timeout, in seconds, for each task of the execution; default: the job's."""

    @field_validator("job")
    @classmethod
    def _valid_job(cls, value: str | None) -> str | None:
        return _check_job(value)


class CloudRunOutput(BaseModel):
    """A finished execution, as the task's output (downstream tasks may ``ref`` any field)."""

    execution: str
    """Full resource name ``projects/P/locations/R/jobs/J/executions/E``."""
    execution_id: str
    job: str
    task_count: int
    succeeded_count: int
    failed_count: int
    cancelled_count: int
    start_time: str | None
    completion_time: str | None
    log_uri: str
    console_link: str


T = TypeVar("T")


@executor(task_config=CloudRunTask)
class CloudRunExecutor:
    """Runs a task as one execution of a Cloud Run Job and tracks it until it ends.

    The container receives ``ORK_RUN_ID``, ``ORK_TASK`` and ``ORK_IDEMPOTENCY_KEY``. ``args``
    and ``env`` values are Jinja templates over ``params``, ``upstream`` (outputs of the
    dependencies by task name), ``tasks`` (``tasks.<t>.output``), ``run_id``, ``task_name``
    and ``workflow_name``. The output names the execution, its task counts, start and
    completion times, log URI and console link.
    """

    def __init__(self, config: CloudRunConfig) -> None:
        self.config = config
        self._clients: CloudRunClients | None = None
        self._clients_lock = threading.Lock()
        # idempotency key -> execution started by a `run` still in progress, so that
        # `cancel(ctx)` arriving during the submit can reach it.
        self._submitted: dict[str, str] = {}
        self._submitted_lock = threading.Lock()

    @staticmethod
    def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the merged task keys (config_file included) and the syntax of the
        templates in ``job``, ``args``, ``env`` and the task's ``env:``."""
        settings, problems = where.task_config(CloudRunTask)
        if settings is None:
            return problems
        for key in ("job", "args", "env"):
            problems += where.templates(getattr(settings, key), key)
        return problems + where.templates(dict(where.env), "env")

    # ------------------------------------------------------------------ clients

    def clients(self) -> CloudRunClients:
        """The shared REST clients, built on first use (this is where run_v2 gets imported)."""
        with self._clients_lock:
            if self._clients is None:
                from ork_executor_cloudrun import api

                try:
                    self._clients = api.make_clients(
                        self.config.project,
                        self.config.region,
                        self.config.api_endpoint,
                        self.config.credentials,
                        request_timeout_s=self.config.request_timeout,
                    )
                except api.CloudRunError as exc:
                    raise TaskError(f"cloudrun executor: {exc.message}") from None
            return self._clients

    def close(self) -> None:
        with self._clients_lock:
            if self._clients is not None:
                self._clients.close()
                self._clients = None

    # ---------------------------------------------------------------------- run

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> CloudRunOutput | Deferred:
        from ork_executor_cloudrun import api

        task = load_task_config(CloudRunTask, config_file, ctx)
        variables = _template_variables(ctx, upstream)
        job = self._job(task, ctx, variables)
        args = render_value(task.args, variables, source=f"task {ctx.task_name!r} args") if task.args is not None else None
        env = self._env(task, ctx, variables)
        key = ctx.idempotency_key
        clients = self.clients()
        try:
            marker = _retry_reads(ctx, lambda: api.latest_execution(clients, job))
            name = self._submit(ctx, clients, job, key, marker, args=args, env=env, task=task)
        except api.CloudRunError as exc:
            raise TaskError(describe_error(exc)) from None
        deferred = self._deferred(name, key)
        ctx.log.info("Cloud Run execution %s started: %s", name, deferred.link)
        return deferred

    def _submit(
        self,
        ctx: Context,
        clients: CloudRunClients,
        job: str,
        key: str,
        marker: str | None,
        *,
        args: list[str] | None,
        env: dict[str, str],
        task: CloudRunTask,
    ) -> str:
        """Start the execution once, even when Cloud Run's answer gets lost on the way."""
        from ork_executor_cloudrun import api

        for attempt, pause in enumerate((*_BACKOFF_S, None)):
            self._raise_if_cancelled(ctx)
            try:
                name = api.run_job(
                    clients,
                    job,
                    args=args,
                    env=env,
                    task_count=task.task_count,
                    parallelism=task.parallelism,
                    timeout_s=task.task_timeout,
                )
            except api.CloudRunTransientError as exc:
                ctx.log.warning(
                    "Cloud Run did not confirm the run of %s (%s); looking for an execution with %s=%s",
                    job,
                    exc.message,
                    ENV_IDEMPOTENCY_KEY,
                    key,
                )
                found = _retry_reads(
                    ctx, lambda: api.find_execution_by_env(clients, job, ENV_IDEMPOTENCY_KEY, key, newer_than=marker)
                )
                if found is not None:
                    ctx.log.info("adopted execution %s, which the unconfirmed run had started", found)
                    name = found
                elif pause is None:
                    raise
                else:
                    ctx.log.info("no execution was started; trying again in %gs (attempt %d)", pause, attempt + 2)
                    ctx.cancel_event.wait(pause)
                    continue
            self._note_submitted(ctx, key, name)
            return name
        raise AssertionError("unreachable")

    def _note_submitted(self, ctx: Context, key: str, name: str) -> None:
        """Remember the execution until ork commits it; cancel it here if the task was cancelled meanwhile."""
        from ork_executor_cloudrun import api

        with self._submitted_lock:
            cancelled = ctx.cancel_event.is_set()
            if not cancelled:
                self._submitted[key] = name
        if cancelled:
            ctx.log.info("the task was cancelled while Cloud Run started %s; cancelling it", name)
            api.cancel_execution(self.clients(), name)
            raise TaskError(f"cancelled; Cloud Run execution {name} was cancelled")

    @staticmethod
    def _raise_if_cancelled(ctx: Context) -> None:
        if ctx.cancel_event.is_set():
            raise TaskError("cancelled before Cloud Run started an execution")

    def _deferred(self, name: str, key: str) -> Deferred:
        from ork_executor_cloudrun import api

        with self._submitted_lock:
            self._submitted.pop(key, None)
        return Deferred(
            tracker=TRACKER,
            handle={"execution": name, "idempotency_key": key},
            link=api.execution_console_link(name),
            external_id=name,
        )

    def _job(self, task: CloudRunTask, ctx: Context, variables: Mapping[str, Any]) -> str:
        raw = task.job or self.config.job
        if not raw:
            raise TaskError(
                f"task {ctx.task_name!r} names no Cloud Run job: set 'job' on the task, or a default 'job' under "
                f"executors.{ctx.executor_name or 'cloudrun'}.config in ork.yaml"
            )
        job = str(render_value(raw, variables, source=f"task {ctx.task_name!r} job"))
        try:
            _check_job(job)
        except ValueError as exc:
            raise TaskError(f"task {ctx.task_name!r}: job: {exc}") from None
        return job

    @staticmethod
    def _env(task: CloudRunTask, ctx: Context, variables: Mapping[str, Any]) -> dict[str, str]:
        raw = {**task.env, **ctx.env}
        clash = sorted(set(raw) & set(_ORK_ENV))
        if clash:
            raise TaskError(f"task {ctx.task_name!r}: env: {', '.join(clash)} is set by ork and cannot be overridden")
        env = {k: str(v) for k, v in render_value(raw, variables, source=f"task {ctx.task_name!r} env").items()}
        env[ENV_RUN_ID] = ctx.run_id
        env[ENV_TASK] = ctx.task_name
        env[ENV_IDEMPOTENCY_KEY] = ctx.idempotency_key
        return env

    # ------------------------------------------------------------ adopt, cancel

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        """After ``ork resume``: the execution the dead attempt started, if it got that far."""
        from ork_executor_cloudrun import api

        try:
            task = load_task_config(CloudRunTask, ctx.config_file, ctx)
            job = self._job(task, ctx, _template_variables(ctx, {}))
        except TaskError as exc:
            # `run` reports a real problem; a job templated on upstream outputs cannot be known here.
            ctx.log.warning("cannot tell which Cloud Run job to look in for an execution to adopt: %s", exc)
            return None
        clients = self.clients()
        try:
            found = _retry_reads(ctx, lambda: api.find_execution_by_env(clients, job, ENV_IDEMPOTENCY_KEY, key))
        except api.CloudRunNotFoundError:
            return None  # the job is gone: `run` says so clearly
        except api.CloudRunError as exc:
            # Not knowing is not "nothing to adopt": starting again could run the job twice.
            raise TaskError(f"could not check for an execution to adopt: {describe_error(exc)}") from None
        if found is None:
            return None
        ctx.log.info("adopting Cloud Run execution %s (%s=%s)", found, ENV_IDEMPOTENCY_KEY, key)
        return self._deferred(found, key)

    def cancel(self, ctx: Context) -> None:
        """The task was cancelled or timed out while ``run`` was still submitting."""
        from ork_executor_cloudrun import api

        with self._submitted_lock:
            name = self._submitted.pop(ctx.idempotency_key, None)
        if name is None:
            # `run` may have returned its Deferred just as ork gave up waiting for it; an
            # execution it started is found by its key. (One that `run` is still starting is
            # cancelled by `run` itself, which sees ctx.cancel_event.)
            try:
                task = load_task_config(CloudRunTask, ctx.config_file, ctx)
                job = self._job(task, ctx, _template_variables(ctx, {}))
                name = api.find_execution_by_env(self.clients(), job, ENV_IDEMPOTENCY_KEY, ctx.idempotency_key)
            except (TaskError, api.CloudRunError) as exc:
                ctx.log.warning("could not look for a Cloud Run execution to cancel: %s", exc)
                return
        if name is not None:
            ctx.log.info("cancelling Cloud Run execution %s", name)
            api.cancel_execution(self.clients(), name)


def _template_variables(ctx: Context, upstream: Mapping[str, object]) -> dict[str, Any]:
    return {
        "params": ctx.params,
        "upstream": dict(upstream),
        "tasks": {name: {"output": output} for name, output in upstream.items()},
        "run_id": ctx.run_id,
        "task_name": ctx.task_name,
        "workflow_name": ctx.workflow_name,
        "ork": ork_variables(ctx),
    }


def _retry_reads(ctx: Context, call: Callable[[], T]) -> T:
    """Retry a read-only call through transient errors; reads are always safe to repeat."""
    from ork_executor_cloudrun import api

    for pause in (*_BACKOFF_S, None):
        try:
            return call()
        except api.CloudRunTransientError as exc:
            if pause is None or ctx.cancel_event.is_set():
                raise
            ctx.log.warning("Cloud Run is unavailable (%s); asking again in %gs", exc.message, pause)
            ctx.cancel_event.wait(pause)
    raise AssertionError("unreachable")


def describe_error(exc: CloudRunError) -> str:
    """One sentence a person can act on, for any error the API layer raises."""
    from ork_executor_cloudrun import api

    if isinstance(exc, api.CloudRunNotFoundError) and exc.execution is None and exc.job:
        job = exc.job.rsplit("/", 1)[-1]
        return (
            f"Cloud Run job {job!r} does not exist in project {exc.project!r}, region {exc.region!r}: check "
            "the task's 'job' and the executor's 'project' and 'region' in ork.yaml"
        )
    if isinstance(exc, api.CloudRunTransientError):
        return f"Cloud Run stayed unavailable after several attempts: {exc.message}"
    return exc.message

