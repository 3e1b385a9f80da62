"""Polls {{ cookiecutter.__class_prefix }} jobs that the executor handed over with ``Deferred``.

ork builds one tracker per executor instance (``{{ cookiecutter.__class_prefix }}JobTracker(executor)``) and
calls `poll` with a batch of the handles `run` returned, every `poll_interval` seconds,
from one event loop however many jobs are waiting. `poll` answers one `JobStatus` per
handle, in order; an exception in the list fails only that handle's poll (ork retries it
with backoff). `cancel` is called when a deferred task times out or the run is cancelled.
"""

from __future__ import annotations

from typing import Any

from ork import JobStatus
from {{ cookiecutter.__package_name }}.client import {{ cookiecutter.__class_prefix }}APIError
from {{ cookiecutter.__package_name }}.executor import {{ cookiecutter.__class_prefix }}Executor, {{ cookiecutter.__class_prefix }}Output


class {{ cookiecutter.__class_prefix }}JobTracker:
    """Asks the job API about each job; sync methods run in a worker thread."""

    poll_interval = 5.0
    """Seconds between polls (ork reads it from the instance: the config's poll_interval)."""

    def __init__(self, executor: {{ cookiecutter.__class_prefix }}Executor) -> None:
        self.client = executor.client
        self.poll_interval = executor.config.poll_interval

    def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        statuses: list[JobStatus | BaseException] = []
        for handle in handles:
            try:
                job = self.client.get(handle["job_id"])
            except {{ cookiecutter.__class_prefix }}APIError as exc:
                statuses.append(exc)
                continue
            state = job.get("state")
            if state == "succeeded":
                output = {{ cookiecutter.__class_prefix }}Output(job_id=job["id"], result=job.get("result") or {})
                statuses.append(JobStatus.succeeded(output.model_dump(mode="json")))
            elif state in ("failed", "cancelled"):
                statuses.append(JobStatus.failed(job.get("error") or f"job {job['id']} {state}"))
            else:
                statuses.append(JobStatus.running(state=state))
        return statuses

    def cancel(self, handle: dict[str, Any]) -> None:
        self.client.cancel(handle["job_id"])
