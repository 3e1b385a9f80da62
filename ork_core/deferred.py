"""Handing a long external job to ork: `Deferred`, `JobStatus` and the tracker contract.

An executor that starts something outside ork (a query, a Cloud Run execution, an HTTP job)
returns ``Deferred(tracker=…, handle={…})`` instead of waiting. ork commits the handle before
anything else happens, then a job tracker polls it. Because the handle is durable, a
restarted ork polls the same job again instead of submitting a new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Deferred:
    """Returned by ``run`` for a job that goes on outside ork.

    :param tracker: the registered job tracker that can poll this handle.
    :param handle: JSON-serialisable facts the tracker needs (job id, location …).
    :param link: a URL a person can open to watch the job.
    :param external_id: the job's id in the external system, for ``ork jobs``.
    """

    tracker: str
    handle: dict[str, Any]
    link: str | None = None
    external_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tracker, str) or not self.tracker:
            raise TypeError("Deferred.tracker must be the name of a registered job tracker")
        try:
            json.dumps(self.handle)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Deferred.handle must be JSON-serialisable: {exc}") from None


class JobState(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobStatus:
    """What a tracker learned about one handle in one poll."""

    state: JobState
    output: Any = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[tuple[str, float, dict[str, str]], ...] = ()
    """``(name, value, labels)`` to record for the task when the job ends: a tracker has no
    ``ctx.metrics``, and after ``ork resume`` no ``run`` call ever sees the job finish."""
    log: tuple[str, ...] = ()
    """Lines the job printed since the last poll, added to the task's log (stream ``job``): a
    tracker has no ``ctx.log``, and a job's output belongs with its task in ``ork logs``."""

    @classmethod
    def running(cls, *, log: tuple[str, ...] = (), **details: Any) -> JobStatus:
        return cls(JobState.RUNNING, details=details, log=tuple(log))

    @classmethod
    def succeeded(
        cls, output: Any = None, *, metrics: tuple[tuple[str, float, dict[str, str]], ...] = (), log: tuple[str, ...] = ()
    ) -> JobStatus:
        return cls(JobState.SUCCEEDED, output=output, metrics=tuple(metrics), log=tuple(log))

    @classmethod
    def failed(
        cls, error: str, *, metrics: tuple[tuple[str, float, dict[str, str]], ...] = (), log: tuple[str, ...] = ()
    ) -> JobStatus:
        return cls(JobState.FAILED, error=error, metrics=tuple(metrics), log=tuple(log))


@runtime_checkable
class JobTracker(Protocol):
    """The shape of a job tracker class (registered with ``ork_register_job_trackers``).

    ork creates one tracker per executor instance that deferred a job:
    ``TrackerClass(executor)``. ``poll`` receives a batch of handles and returns one
    `JobStatus` (or an exception, for that handle alone) per handle, in order. ``poll``
    and ``cancel`` may be ``async def``; plain functions run in a worker thread. A class
    attribute ``poll_interval`` (seconds) sets how often ork polls.
    """

    def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]: ...

    def cancel(self, handle: dict[str, Any]) -> None: ...


async def poll_each(
    handles: list[dict[str, Any]],
    poll_one: Callable[[dict[str, Any]], JobStatus | BaseException],
    *,
    concurrency: int = 8,
) -> list[JobStatus | BaseException]:
    """A tracker's ``poll`` for clients that block: one call per handle in worker threads.

    At most `concurrency` calls run at once (match the client's connection pool), so one
    slow answer does not hold up the batch; results come back in the handles' order.
    """
    import asyncio

    limit = asyncio.Semaphore(concurrency)

    async def one(handle: dict[str, Any]) -> JobStatus | BaseException:
        async with limit:
            return await asyncio.to_thread(poll_one, handle)

    return list(await asyncio.gather(*(one(h) for h in handles)))
