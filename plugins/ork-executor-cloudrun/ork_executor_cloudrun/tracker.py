"""The ``cloudrun`` job tracker: follows deferred Cloud Run executions to their end.

The outcome is read from the Execution resource (``api.get_execution_status``), never
from the long-running operation ``:run`` returned: a cancelled execution ends its
operation without an error, and the operation is gone after a restart anyway.

Errors are sorted by whether asking again can help. A 503, 429 or timeout becomes that
handle's exception, so ork's triggerer backs off and polls again (and gives up only
after many failures in a row). A missing execution or a permission error will not fix
itself, so it fails the task with a message saying what to check.
"""

from __future__ import annotations

from typing import Any

from ork import JobStatus, poll_each

from ork_executor_cloudrun import api
from ork_executor_cloudrun.executor import CloudRunExecutor, CloudRunOutput

__all__ = ["CloudRunJobTracker", "status_to_job_status"]

# Executions polled at once; the REST session's connection pool holds 10.
_CONCURRENT_POLLS = 8


class CloudRunJobTracker:
    """Built by ork once per ``cloudrun`` executor instance, with that instance."""

    poll_interval: float = 10.0

    def __init__(self, executor: CloudRunExecutor) -> None:
        self._executor = executor
        self.poll_interval = executor.config.poll_interval

    async def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        """One status per handle, asked concurrently so one slow answer does not hold up the batch."""
        return await poll_each(handles, self._poll_one, concurrency=_CONCURRENT_POLLS)

    def _poll_one(self, handle: dict[str, Any]) -> JobStatus | BaseException:
        name = handle.get("execution")
        if not isinstance(name, str) or not name:
            return JobStatus.failed(f"the deferred Cloud Run handle {handle!r} names no execution")
        try:
            status = api.get_execution_status(self._executor.clients(), name)
        except api.CloudRunTransientError as exc:
            return exc
        except api.CloudRunNotFoundError:
            return JobStatus.failed(
                f"Cloud Run execution {name} no longer exists (was it or its job deleted?)"
            )
        except api.CloudRunError as exc:
            return JobStatus.failed(exc.message)
        return status_to_job_status(status)

    def cancel(self, handle: dict[str, Any]) -> None:
        """Ask Cloud Run to cancel; cancelling a finished or vanished execution is fine."""
        name = handle.get("execution")
        if isinstance(name, str) and name:
            api.cancel_execution(self._executor.clients(), name)


def status_to_job_status(status: api.ExecutionStatus) -> JobStatus:
    """Map an execution's state to what ork records; the output is the task's output."""
    name = status.execution_name
    if status.state == "running":
        return JobStatus.running(
            running=status.running_count,
            succeeded=status.succeeded_count,
            failed=status.failed_count,
            task_count=status.task_count,
        )
    if status.state == "succeeded":
        parts = api.parse_execution_name(name)
        return JobStatus.succeeded(
            CloudRunOutput(
                execution=name,
                execution_id=parts["execution"],
                job=parts["job"],
                task_count=status.task_count,
                succeeded_count=status.succeeded_count,
                failed_count=status.failed_count,
                cancelled_count=status.cancelled_count,
                start_time=status.start_time,
                completion_time=status.completion_time,
                log_uri=status.log_uri,
                console_link=status.console_link,
            )
        )
    counts = (
        f"{status.succeeded_count} succeeded, {status.failed_count} failed, "
        f"{status.cancelled_count} cancelled of {status.task_count}"
    )
    if status.state == "cancelled":
        return JobStatus.failed(
            f"Cloud Run execution {name} was cancelled ({counts}): {status.message}; logs: {status.log_uri}"
        )
    return JobStatus.failed(f"Cloud Run execution {name} failed ({counts}): {status.message}; logs: {status.log_uri}")
