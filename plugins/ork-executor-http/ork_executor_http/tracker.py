"""The ``http_async`` job tracker: polls each job's status URL and reads its state.

Everything it needs is in the handle (absolute URLs, paths, states) except credentials,
which come from the executor's config at poll time and so are never stored. Handles in
one batch are polled concurrently over the executor's shared connection pool.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ork import JobStatus, TaskError
from ork_executor_http.executors import HttpAsyncExecutor
from ork_executor_http.jsonpath import PathNotFound, get_path


class CancelNotConfigured(TaskError):
    """The task has no ``cancel_url``, so its job cannot be cancelled from ork."""


class HttpJobTracker:
    poll_interval = 2.0

    def __init__(self, executor: HttpAsyncExecutor) -> None:
        self.http = executor.http
        self.max_poll_failures = executor.config.max_poll_failures
        self.max_backoff = executor.config.max_backoff

    def poll_interval_for(self, handle: dict[str, Any]) -> float | None:
        value = handle.get("poll_interval")
        return float(value) if isinstance(value, (int, float)) else None

    async def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        return await asyncio.gather(*(self._status(h) for h in handles), return_exceptions=True)

    async def _status(self, handle: dict[str, Any]) -> JobStatus:
        run_id = handle["run_id"]
        what = f"status of job {run_id}"
        response = await self.http.send("GET", handle["status_url"], what=what)
        self.http.expect(response, [], what=what)
        document = self.http.json_of(response, what=what)
        state = str(get_path(document, handle["status_path"], what=f"status_path {handle['status_path']!r}"))
        if state in handle["success_states"]:
            output_path = handle.get("output_path")
            if output_path is None:
                return JobStatus.succeeded(document)
            try:
                return JobStatus.succeeded(get_path(document, output_path, what=f"output_path {output_path!r}"))
            except PathNotFound as exc:
                return JobStatus.failed(f"job {run_id} ended in state {state!r}, but {exc}")
        if state in handle["failure_states"]:
            message = f"job {run_id} ended in state {state!r}"
            error_path = handle.get("error_path")
            if error_path:
                try:
                    message += f": {get_path(document, error_path, what=f'error_path {error_path!r}')}"
                except PathNotFound:
                    pass
            return JobStatus.failed(message)
        return JobStatus.running(state=state)

    async def cancel(self, handle: dict[str, Any]) -> None:
        """Cancel the job; a job that is already gone (404, 409, 410) counts as cancelled."""
        url = handle.get("cancel_url")
        if not url:
            raise CancelNotConfigured(
                f"the task has no cancel_url, so job {handle['run_id']} was not cancelled and may still be running"
            )
        method = handle.get("cancel_method") or "DELETE"
        what = f"cancel of job {handle['run_id']}"
        response = await self.http.send(method, url, what=what)
        if response.status_code in (404, 409, 410):
            return
        self.http.expect(response, [], what=what)
