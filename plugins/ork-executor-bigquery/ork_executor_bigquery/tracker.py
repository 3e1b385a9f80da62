"""The ``bigquery`` job tracker: follows deferred query jobs by id and location to their end.

Errors are sorted by whether asking again can help. A 429/5xx or a network error becomes
that handle's exception, so ork's triggerer backs off and polls again (giving up only after
many failures in a row). A job BigQuery does not know is asked about again too, since a job
can be missing for a moment right after it was created. A refusal that will not change by
itself (403, 400) fails the task with BigQuery's message.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as api_exceptions

from ork import JobStatus, TaskError, poll_each
from ork_executor_bigquery import bq
from ork_executor_bigquery.executor import BigQueryExecutor

__all__ = ["BigQueryJobTracker", "JobNotFoundError"]

_CONCURRENT_POLLS = 8
"""Jobs looked at at once; the client's HTTP connection pool holds 10."""


class JobNotFoundError(LookupError):
    """BigQuery has (as yet) no job with the handle's id in the handle's location."""


class BigQueryJobTracker:
    """Built by ork once per ``bigquery`` executor instance, with that instance."""

    poll_interval: float = 2.0

    def __init__(self, executor: BigQueryExecutor) -> None:
        self._executor = executor
        self.poll_interval = executor.config.poll_interval

    async def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        """One status per handle, asked concurrently so one slow answer does not hold up the batch."""
        return await poll_each(handles, self._poll_one, concurrency=_CONCURRENT_POLLS)

    def _poll_one(self, handle: dict[str, Any]) -> JobStatus | BaseException:
        job_id = handle.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            return JobStatus.failed(f"the deferred BigQuery handle {handle!r} names no job")
        location = handle.get("location")
        try:
            status = bq.poll_job(self._executor.client(), job_id, location, project=handle.get("project"))
        except TaskError as exc:
            return JobStatus.failed(str(exc))
        except api_exceptions.NotFound as exc:
            return JobNotFoundError(f"BigQuery has no job {job_id} in location {location}: {exc.message}")
        except Exception as exc:
            if bq.is_transient(exc) or not isinstance(exc, api_exceptions.GoogleAPICallError):
                return exc
            return JobStatus.failed(f"could not read BigQuery job {job_id}: {exc.code} {exc.message}")
        return self._executor.outcome(status, handle)

    def cancel(self, handle: dict[str, Any]) -> None:
        """Ask BigQuery to stop the job; a job that already ended or never existed is left alone."""
        job_id = handle.get("job_id")
        if isinstance(job_id, str) and job_id:
            bq.cancel_job(self._executor.client(), job_id, handle.get("location"), project=handle.get("project"))
