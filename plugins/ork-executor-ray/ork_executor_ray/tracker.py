"""The ``ray_job`` tracker: reads each job's status and its new log lines.

The handle holds the dashboard URL and the submission id, so a resumed ork polls (and
stops) the job even if ``ork.yaml`` changed meanwhile. Where the copy of a job's log got
to is kept here, in memory: after a restart the log is copied from its start again.
"""

from __future__ import annotations

import threading
from typing import Any

from ork import JobStatus, poll_each

from ork_executor_ray.job import RayJobExecutor, job_info, make_client, output_of

MAX_LINES = 10_000
"""New log lines copied per poll at most; a job printing faster has the rest summarised."""


class RayJobTracker:
    def __init__(self, executor: RayJobExecutor) -> None:
        self.poll_interval = executor.config.poll_interval
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._copied: dict[str, int] = {}

    def _client(self, url: str) -> Any:
        with self._lock:
            client = self._clients.get(url)
        if client is None:
            client = make_client(url)
            with self._lock:
                self._clients[url] = client
        return client

    async def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        return await poll_each(handles, self._poll_one, concurrency=8)

    def _poll_one(self, handle: dict[str, Any]) -> JobStatus | BaseException:
        try:
            return self._status(handle)
        except Exception as exc:  # noqa: BLE001 - this handle's poll failed, not the batch's
            return exc

    def _status(self, handle: dict[str, Any]) -> JobStatus:
        sid = str(handle["submission_id"])
        client = self._client(str(handle["dashboard_url"]))
        info = job_info(client, sid)
        if info is None:
            return JobStatus.failed(f"Ray job {sid} no longer exists on {handle['dashboard_url']}")
        state = str(getattr(info.status, "value", info.status))
        done = state in ("SUCCEEDED", "FAILED", "STOPPED")
        lines = self._new_lines(client, sid, final=done)
        if state == "SUCCEEDED":
            return JobStatus.succeeded(output_of(info, sid), log=lines)
        if done:
            code = getattr(info, "driver_exit_code", None)
            exit_code = f" (exit code {code})" if code is not None else ""
            return JobStatus.failed(f"Ray job {sid} {state.lower()}{exit_code}: {info.message}", log=lines)
        return JobStatus.running(log=lines, state=state)

    def _new_lines(self, client: Any, sid: str, *, final: bool) -> tuple[str, ...]:
        """Whole lines printed since the last poll (and the unfinished last one once the job ended)."""
        try:
            text = str(client.get_job_logs(sid))
        except RuntimeError:
            return ()
        with self._lock:
            start = self._copied.get(sid, 0)
            end = len(text) if final else text.rfind("\n", start) + 1
            if end <= start:
                return ()
            self._copied[sid] = end
        lines = text[start:end].splitlines()
        if len(lines) > MAX_LINES:
            lines = [*lines[:MAX_LINES], f"… {len(lines) - MAX_LINES} more lines: see the job's log in the Ray dashboard"]
        return tuple(lines)

    def cancel(self, handle: dict[str, Any]) -> None:
        """Stop the job; one that already ended or does not exist counts as stopped."""
        sid = str(handle["submission_id"])
        client = self._client(str(handle["dashboard_url"]))
        try:
            client.stop_job(sid)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return
            raise
