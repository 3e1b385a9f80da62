"""The ``bigquery`` executor: a task is one BigQuery query job, rendered from a SQL template.

``run`` renders the template, submits the job and returns. A job that is still running is
handed to ork as a ``Deferred`` and followed by the ``bigquery`` job tracker (``tracker.py``),
so no worker thread waits on a query, and ``ork resume`` polls the committed job again.

The job id is the task's idempotency key (stable across a crash, new for each retry), which
makes submitting idempotent: if ork dies after BigQuery accepted the job but before ork
committed it, the next attempt's submission gets ``409 Conflict`` and adopts that job, and
``adopt`` (called by ``ork resume``) finds it by id before anything is submitted at all.

``google.cloud.bigquery`` is imported on first use (``bq`` is imported inside the methods),
so ``ork validate`` checks BigQuery tasks without loading it.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ork import Context, Deferred, JobStatus, PathError, Problem, TaskError, executor, load_task_config
from ork_core.bindings import resolve

from ork_executor_bigquery.models import BigQueryConfig, BigQueryOutput, BigQueryTask
from ork_executor_bigquery.sql import (
    error_position,
    find_template,
    offending_lines,
    render_sql,
    template_label,
    template_syntax_error,
)

if TYPE_CHECKING:
    from google.api_core.exceptions import GoogleAPICallError

    from ork import TaskWhere
    from google.cloud import bigquery

    from ork_executor_bigquery import bq

__all__ = ["TRACKER", "BigQueryExecutor", "PreparedQuery", "estimated_cost"]

TRACKER = "bigquery"
TIB = 1024**4
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def estimated_cost(bytes_processed: int, cost_per_tb: float) -> float:
    """The seed's estimate: TiB processed times the price per TiB, in dollars, to 4 places."""
    return round(bytes_processed / TIB * cost_per_tb, 4)


def _label(path: Path, project_dir: Path) -> str:
    """A template's path as messages show it: relative to the project when inside it."""
    try:
        return str(path.relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)


def _label_value(text: str) -> str:
    return _LABEL_UNSAFE.sub("_", text.lower())[:63]


@dataclass(frozen=True)
class PreparedQuery:
    """A task's query, rendered and checked, ready to submit (or to dry-run for an estimate)."""

    sql: str
    template: str
    """The template's path as shown in messages (relative to the project when inside it)."""
    task: BigQueryTask
    parameters: dict[str, Any]
    """Query parameters as ``google.cloud.bigquery`` parameter objects, by name."""


@executor(task_config=BigQueryTask)
class BigQueryExecutor:
    """Runs a task's SQL template as one BigQuery query job; ork tracks the job until it ends.

    The template (``file``) is rendered with ``params`` and the outputs of the task's
    dependencies by task name (``{{ stage_users.rows_affected }}``); a missing variable fails
    the task naming the template, line and variable. Values that only belong in the query
    as data go in ``query_parameters`` (``@name`` in the SQL). The output has
    ``rows_affected``, ``bytes_processed``, ``estimated_cost_usd``, ``job_id`` and
    ``console_link``; ``bytes_processed`` is also recorded as a metric.
    """

    def __init__(self, config: BigQueryConfig) -> None:
        self.config = config
        self._client: bigquery.Client | None = None
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------------ client

    def client(self) -> bigquery.Client:
        """The shared client, built on first use (this is where google.cloud.bigquery gets imported)."""
        with self._client_lock:
            if self._client is None:
                from google.auth import exceptions as auth_exceptions

                from ork_executor_bigquery import bq

                try:
                    self._client = bq.make_client(
                        self.config.project, self.config.location, self.config.api_endpoint, self.config.credentials
                    )
                except (ValueError, auth_exceptions.DefaultCredentialsError) as exc:
                    raise TaskError(f"bigquery executor: cannot create a BigQuery client: {exc}") from None
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()  # type: ignore[no-untyped-call]
                self._client = None

    # ------------------------------------------------------------------ check

    @staticmethod
    def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the merged keys (config_file included), a ``file`` that exists inside
        the project, and its Jinja syntax. Nothing is rendered or sent to BigQuery."""
        settings, problems = where.task_config(BigQueryTask)
        if settings is None:
            return problems
        if not settings.file:
            return [where.problem("file", "no SQL template: set 'file' (e.g. file: sql/staging/users.sql)")]
        folders = [where.workflow_dir, where.project_dir] + ([Path(where.config_file).parent] if where.config_file else [])
        try:
            path = where.resolve_path(settings.file, field="file", relative_to=folders, must_exist="file")
        except PathError as exc:
            return [where.problem("file", f"SQL template {exc.reason}")]
        key = ("bigquery.template", str(path))
        if key not in where.cache:
            label = _label(path, where.project_dir)
            try:
                where.cache[key] = template_syntax_error(path.read_text(encoding="utf-8"), label)
            except (OSError, UnicodeDecodeError) as exc:
                where.cache[key] = f"{label}: cannot read the SQL template: {exc}"
        error = where.cache[key]
        return [where.problem("file", error)] if error else []

    # --------------------------------------------------------------------- run

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> BigQueryOutput | Deferred:
        query = self.prepare(config_file, ctx, upstream)
        return self.submit(query, ctx)

    def prepare(self, config_file: str, ctx: Context, upstream: Mapping[str, object]) -> PreparedQuery:
        """Read the task's settings, resolve their bindings and render the SQL; nothing is sent."""
        task = load_task_config(BigQueryTask, config_file, ctx)
        where = config_file or f"workflow task {ctx.task_name!r}"
        if not task.file:
            raise TaskError(f"{where}: no SQL template: set 'file' (e.g. file: sql/staging/users.sql)")
        params = resolve(task.params, ctx.params, upstream, ctx.run_values())
        path = find_template(task.file, ctx, config_file)
        label = template_label(path, ctx)
        # The seed's variables: the task's params, then the upstream outputs by task name.
        sql = render_sql(path, label, {**params, **upstream})
        raw = resolve(task.query_parameters, ctx.params, upstream, ctx.run_values())
        return PreparedQuery(sql=sql, template=label, task=task, parameters=_query_parameters(raw, where))

    def submit(self, query: PreparedQuery, ctx: Context) -> BigQueryOutput | Deferred:
        """Submit the job under the task's idempotency key and hand it over (or finish, if it already ended)."""
        from google.api_core import exceptions as api_exceptions

        from ork_executor_bigquery import bq

        client = self.client()
        if ctx.cancel_event.is_set():
            raise TaskError("cancelled before the query was submitted")
        job_id = ctx.idempotency_key or f"ork-{uuid.uuid4().hex}"
        task = query.task
        try:
            result = bq.submit_query(
                client,
                query.sql,
                job_id=job_id,
                location=self.config.location,
                labels=self.labels(ctx),
                query_parameters=query.parameters,
                destination=task.destination,
                write_disposition=task.write_disposition,
                dry_run=task.dry_run,
                maximum_bytes_billed=self.config.maximum_bytes_billed,
                default_dataset=self.config.default_dataset,
            )
        except bq.JobIdReusedError as exc:
            raise TaskError(f"{exc} (the job id is ork's idempotency key for this attempt)") from None
        except api_exceptions.GoogleAPICallError as exc:
            raise TaskError(describe_api_error(exc, job_id, query.sql, query.template)) from None
        except Exception as exc:
            if bq.is_transient(exc):
                raise TaskError(f"BigQuery did not accept job {job_id}, still failing after retries: {exc}") from None
            raise
        if task.dry_run:
            processed = result.status.bytes_processed
            cost = estimated_cost(processed, self.config.cost_per_tb)
            ctx.log.info("dry run: the query would process %d bytes (about $%.4f)", processed, cost)
            return BigQueryOutput(
                rows_affected=0, bytes_processed=processed, estimated_cost_usd=cost, job_id=job_id,
                console_link="", dry_run=True,
            )
        handle = {
            "job_id": result.job_id,
            "project": result.project,
            "location": result.location or self.config.location,
            "task": ctx.task_name,
            "workflow": ctx.workflow_name,
            "template": query.template,
        }
        if result.adopted:
            ctx.log.info(
                "BigQuery job %s already existed (an earlier submission of this attempt got through): "
                "adopted, not submitted again",
                job_id,
            )
        else:
            ctx.log.info("submitted BigQuery job %s: %s", job_id, result.console_link)
        if ctx.cancel_event.is_set():
            # cancel(ctx) may have run before the job existed; this attempt must not leave it running.
            bq.cancel_job(client, result.job_id, handle["location"], project=result.project)
            raise TaskError(f"cancelled; BigQuery job {job_id} was cancelled")
        status = result.status
        if status.done:
            if status.query is None:
                status = dataclasses.replace(status, query=query.sql)
            return self._finish_now(status, handle, ctx)
        return self.deferred(handle, result.console_link)

    def _finish_now(self, status: bq.JobStatus, handle: dict[str, Any], ctx: Context) -> BigQueryOutput | Deferred:
        """A job that ended before ``run`` returned needs no tracking: report it like the tracker would."""
        from ork_executor_bigquery import bq

        if status.state == "succeeded":
            try:
                # The insert's answer lacks a SELECT's row count; one look at the job has it.
                status = bq.poll_job(self.client(), status.job_id, handle["location"], project=status.project)
            except Exception as exc:
                ctx.log.warning("could not read finished job %s (%s); tracking it instead", status.job_id, exc)
                return self.deferred(handle, status.console_link)
        outcome = self.outcome(status, handle)
        for name, value, labels in outcome.metrics:
            ctx.metrics.record(name, value, labels=labels)
        if outcome.error is not None:
            raise TaskError(outcome.error)
        return BigQueryOutput.model_validate(outcome.output)

    def deferred(self, handle: dict[str, Any], link: str) -> Deferred:
        return Deferred(tracker=TRACKER, handle=handle, link=link, external_id=str(handle["job_id"]))

    def labels(self, ctx: Context) -> dict[str, str]:
        """The configured labels plus ork's, so BigQuery's job list says which run and task ran a job."""
        return {
            **self.config.labels,
            "ork-workflow": _label_value(ctx.workflow_name),
            "ork-task": _label_value(ctx.task_name),
            "ork-run": _label_value(ctx.run_id),
        }

    # ---------------------------------------------------------------- outcome

    def outcome(self, status: bq.JobStatus, handle: Mapping[str, Any]) -> JobStatus:
        """What a look at the job means for the task; shared by ``run`` and the tracker."""
        if status.state == "running":
            return JobStatus.running(job_id=status.job_id)
        if status.state == "failed":
            return JobStatus.failed(describe_job_error(status, handle.get("template")))
        processed = status.bytes_processed
        output = BigQueryOutput(
            rows_affected=status.rows_affected,
            bytes_processed=processed,
            estimated_cost_usd=estimated_cost(processed, self.config.cost_per_tb),
            job_id=status.job_id,
            console_link=status.console_link,
        )
        labels = {"task": str(handle.get("task", "")), "workflow": str(handle.get("workflow", ""))}
        return JobStatus.succeeded(output.model_dump(mode="json"), metrics=(("bytes_processed", float(processed), labels),))

    # --------------------------------------------------------- adopt, cancel

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        """After ``ork resume``: the job the dead attempt submitted under `key`, if BigQuery has it."""
        from google.api_core import exceptions as api_exceptions

        from ork_executor_bigquery import bq

        try:
            status = bq.poll_job(self.client(), key, self.config.location, count_result_rows=False)
        except api_exceptions.NotFound:
            return None
        except Exception as exc:
            # Safe to give up here: running the task again submits under the same job id,
            # and BigQuery's 409 then hands over the existing job instead of a second one.
            ctx.log.warning("could not look up BigQuery job %s (%s); the task runs again under the same job id", key, exc)
            return None
        ctx.log.info("adopting BigQuery job %s, submitted before ork stopped", key)
        handle = {
            "job_id": status.job_id,
            "project": status.project,
            "location": status.location or self.config.location,
            "task": ctx.task_name,
            "workflow": ctx.workflow_name,
            "template": self._template_of(ctx),
        }
        return self.deferred(handle, status.console_link)

    @staticmethod
    def _template_of(ctx: Context) -> str | None:
        try:
            task = load_task_config(BigQueryTask, ctx.config_file, ctx)
            return template_label(find_template(task.file, ctx, ctx.config_file), ctx) if task.file else None
        except TaskError:
            return None

    def cancel(self, ctx: Context) -> None:
        """The task was cancelled or timed out while ``run`` was still submitting its job."""
        from ork_executor_bigquery import bq

        if ctx.idempotency_key:
            bq.cancel_job(self.client(), ctx.idempotency_key, self.config.location)


# ------------------------------------------------------------------------ helpers


def _query_parameters(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """YAML values as BigQuery parameters; ``{type: T, value: v}`` sets the type explicitly."""
    from google.cloud import bigquery

    from ork_executor_bigquery import bq

    values: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, Mapping):
            if set(value) != {"type", "value"} or not isinstance(value["type"], str):
                raise TaskError(
                    f"{where}: query_parameters.{name}: a mapping must be {{type: BIGQUERY_TYPE, value: ...}}, "
                    f"e.g. {{type: DATE, value: '2024-01-31'}}; got keys {sorted(value)}"
                )
            kind = value["type"].strip().upper()
            if isinstance(value["value"], list):
                values[name] = bigquery.ArrayQueryParameter(name, kind, value["value"])
            else:
                values[name] = bigquery.ScalarQueryParameter(name, kind, value["value"])
        else:
            values[name] = value
    try:
        built = bq.to_query_parameters(values)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{where}: query_parameters: {exc}") from None
    return {p.name: p for p in built if p.name is not None}


def _with_sql(text: str, sql: str | None, template: str | None, message: str, line: int | None, column: int | None) -> str:
    excerpt = offending_lines(sql, message, line, column) if sql else ""
    if excerpt:
        source = f"the SQL rendered from {template}" if template else "the query"
        text += f"\nin {source}:\n{excerpt}"
    return text


def describe_job_error(status: bq.JobStatus, template: str | None) -> str:
    """BigQuery's own message, the lines of the query it points at, and where to look further."""
    message = status.error_message or "no message"
    if status.error_reason == "stopped":
        return f"BigQuery job {status.job_id} was cancelled: {message}"
    text = f"BigQuery job {status.job_id} failed ({status.error_reason or 'error'}): {message}"
    if status.retryable_failure:
        text += " (BigQuery counts this as transient: 'retries:' on the task runs it again under a new job id)"
    text = _with_sql(text, status.query, template, message, status.error_line, status.error_column)
    return f"{text}\n{status.console_link}"


def describe_api_error(exc: GoogleAPICallError, job_id: str, sql: str, template: str | None) -> str:
    """A refused submission (400 for some invalid queries, 403, 404 for a missing dataset …)."""
    message = str(exc.message or exc)
    line, column = error_position(message)
    text = f"BigQuery refused job {job_id} ({exc.code} {type(exc).__name__}): {message}"
    return _with_sql(text, sql, template, message, line, column)

