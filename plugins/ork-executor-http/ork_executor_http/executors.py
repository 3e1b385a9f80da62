"""The ``http`` and ``http_async`` executors.

``http`` waits for its one response. ``http_async`` only waits for the kickoff: the job's
run id goes into a `Deferred` handle that ork commits before anything else, and the
``http_async`` tracker polls it from there — so a restarted ork polls the same job again
instead of starting another one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ork import Context, Deferred, KickoffUncertain, Problem, TaskError, executor, load_task_config
from ork_executor_http.client import HttpClient, HttpError, elapsed_ms
from ork_executor_http.config import HttpAsyncTask, HttpConfig, HttpTask, RequestKeys
from ork_executor_http.credentials import redact_url, without_userinfo
from ork_executor_http.jsonpath import get_path
from ork_executor_http.rendering import (
    Request,
    prepare,
    render_text,
    template_variables,
)

if TYPE_CHECKING:
    from ork import TaskWhere

TRACKER = "http_async"
GATEWAY_STATUSES = frozenset({502, 504})
"""A gateway's answer that the service behind it did not give: the kickoff may have arrived."""


class _Base:
    _task_model: ClassVar[type[RequestKeys]] = HttpTask
    _templated: ClassVar[tuple[str, ...]] = ("url", "headers", "query", "body")
    """The task keys that are Jinja templates, checked for syntax by ``ork validate``."""

    @classmethod
    def check(cls, task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the merged task keys (config_file included) and the syntax of every template."""
        settings, problems = where.task_config(cls._task_model)
        if settings is None:
            return problems
        for key in cls._templated:
            problems += where.templates(getattr(settings, key), key)
        return problems

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.http = HttpClient(config)

    async def _send(self, request: Request, ctx: Context, *, what: str) -> Any:
        headers = dict(request.headers)
        if self.config.idempotency_header and ctx.idempotency_key:
            headers[self.config.idempotency_header] = ctx.idempotency_key
        started = time.perf_counter()
        response = await self.http.send(
            request.method, request.url, what=what, headers=headers, query=request.query, body=request.body
        )
        ctx.log.info(
            "%s %s -> %s %s (%s)", request.method, redact_url(str(response.request.url)),
            response.status_code, response.reason_phrase, elapsed_ms(started),
        )
        return response

    async def close(self) -> None:
        await self.http.aclose()


@executor(task_config=HttpTask)
class HttpExecutor(_Base):
    """Send one HTTP request; the output is the response JSON, or the part at ``output_path``.

    The URL, headers, query and body are templates over ``params``, ``upstream`` and ``ork``.
    A status outside ``accept_status`` (default: any 2xx) fails the task with the body's start.
    """

    def __init__(self, config: HttpConfig) -> None:
        super().__init__(config)

    async def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:
        task = load_task_config(HttpTask, config_file, ctx)
        # in a thread: rendering may take long, and `run` is on ork's loop with every task's deadline
        request = await asyncio.to_thread(prepare, task, template_variables(ctx, upstream), ctx, upstream)
        response = await self._send(request, ctx, what="request")
        self.http.expect(response, task.accept_status, what="request")
        if task.output_path is None and not response.content:
            return None
        document = self.http.json_of(response, what="request")
        if task.output_path is None:
            return document
        return get_path(document, task.output_path, what=f"output_path {task.output_path!r}")


@executor(task_config=HttpAsyncTask)
class HttpAsyncExecutor(_Base):
    """Start a job with a kickoff request, then let ork poll its status URL until it ends.

    The kickoff carries ork's idempotency key (header ``Idempotency-Key`` by default), which
    stays the same when ork restarts and changes only when the task is retried. A kickoff
    that may have arrived without an answer (read timeout, reset, 502/504) raises
    `KickoffUncertain`: the retry keeps the key and first asks ``lookup_url`` for the job.
    """

    _task_model = HttpAsyncTask
    _templated = (*_Base._templated, "status_url", "cancel_url", "lookup_url")

    def __init__(self, config: HttpConfig) -> None:
        super().__init__(config)

    async def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Deferred:
        task = load_task_config(HttpAsyncTask, config_file, ctx)
        variables = template_variables(ctx, upstream)
        request = await asyncio.to_thread(prepare, task, variables, ctx, upstream)  # off the loop, as above
        try:
            response = await self._send(request, ctx, what="kickoff")
            self.http.expect(response, task.accept_status, what="kickoff")
        except HttpError as exc:
            if exc.maybe_sent or exc.status in GATEWAY_STATUSES:  # the job may exist: same key, adopt first
                raise KickoffUncertain(f"{exc}; the kickoff may have reached the service") from None
            raise
        document = self.http.json_of(response, what="kickoff")
        run_id = get_path(document, task.run_id_path, what=f"run_id_path {task.run_id_path!r}")
        deferred = self._deferred(task, variables, run_id, ctx)
        ctx.log.info("job %s started; polling %s every %gs", deferred.external_id, deferred.link, task.poll_interval)
        return deferred

    async def adopt(self, key: str, ctx: Context) -> Deferred | None:
        """After a crash mid-kickoff: find the job by idempotency key via ``lookup_url``, if the task has one."""
        task = load_task_config(HttpAsyncTask, getattr(ctx, "config_file", ""), ctx)
        if task.lookup_url is None:
            return None
        variables = template_variables(ctx, {})
        try:
            url = render_text(task.lookup_url, variables, ctx=ctx, key="lookup_url")
        except TaskError as exc:
            ctx.log.warning("cannot look up the job to adopt (%s); starting it again with the same idempotency key", exc)
            return None
        response = await self.http.send("GET", url, what="lookup")
        if response.status_code == 404:
            return None
        self.http.expect(response, [], what="lookup")
        path = task.lookup_run_id_path or task.run_id_path
        run_id = get_path(self.http.json_of(response, what="lookup"), path, what=f"lookup_run_id_path {path!r}")
        return self._deferred(task, variables, run_id, ctx)

    def _deferred(self, task: HttpAsyncTask, variables: dict[str, Any], run_id: Any, ctx: Context) -> Deferred:
        if not isinstance(run_id, (str, int)) or isinstance(run_id, bool) or run_id == "":
            raise TaskError(f"run_id_path {task.run_id_path!r}: expected a string or number, got {run_id!r}")
        run_id = str(run_id)
        with_id = {**variables, "run_id": run_id}
        # stored without user:password@ (the client adds the base URL's credentials back when polling)
        status_url = without_userinfo(self.http.absolute(render_text(task.status_url, with_id, ctx=ctx, key="status_url")))
        cancel_url = (
            without_userinfo(self.http.absolute(render_text(task.cancel_url, with_id, ctx=ctx, key="cancel_url")))
            if task.cancel_url
            else None
        )
        handle = {
            "run_id": run_id,
            "status_url": status_url,
            "status_path": task.status_path,
            "success_states": task.success_states,
            "failure_states": task.failure_states,
            "output_path": task.output_path,
            "error_path": task.error_path,
            "poll_interval": task.poll_interval,
            "cancel_url": cancel_url,
            "cancel_method": task.cancel_method,
        }
        return Deferred(TRACKER, handle, link=redact_url(status_url), external_id=run_id)

