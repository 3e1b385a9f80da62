"""Polls deferred external jobs through their job trackers, in one asyncio loop.

Thousands of deferred jobs cost one process and one loop: each (tracker, executor) pair
gets one polling coroutine that asks about its jobs in batches. A failing poll backs off;
one bad handle never fails the others; a job whose polls keep failing is failed with the
last error after `max_poll_failures`. Outcomes go back to the scheduler as events, so the
scheduler stays the only writer of task states.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ork_core.deferred import JobState, JobStatus
from ork_core.executors import ExecutorManager
from ork_core.registry import Registry

DEFAULT_POLL_INTERVAL = 5.0
MAX_BACKOFF = 60.0
BATCH_SIZE = 200


@dataclass
class TrackedJob:
    run_id: str
    task: str
    attempt: int
    executor: str
    tracker: str
    handle: dict[str, Any]
    deadline: float | None = None
    failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class JobEvent:
    """What the triggerer tells the scheduler about one job."""

    task: str
    attempt: int
    kind: str  # "done" | "poll" | "timeout"
    status: JobStatus | None = None
    error: str | None = None
    polled_at: float = 0.0
    failures: int = 0


@dataclass
class _Group:
    tracker: Any
    interval: float
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    result = await asyncio.to_thread(func, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class Triggerer:
    def __init__(
        self,
        registry: Registry,
        executors: ExecutorManager,
        post: Callable[[JobEvent], None],
        *,
        max_concurrent_polls: int = 8,
        max_poll_failures: int = 10,
        poll_interval: float | None = None,
    ) -> None:
        self._registry = registry
        self._executors = executors
        self._post = post
        self._polls = asyncio.Semaphore(max_concurrent_polls)
        self._max_failures = max_poll_failures
        self._interval_override = poll_interval
        self._groups: dict[tuple[str, str], _Group] = {}

    @property
    def count(self) -> int:
        return sum(len(g.jobs) for g in self._groups.values())

    async def _group(self, job: TrackedJob) -> _Group:
        key = (job.tracker, job.executor)
        group = self._groups.get(key)
        if group is None:
            cls = self._registry.get("tracker", job.tracker).load()
            executor = await self._executors.get(job.executor)
            tracker = cls(executor)
            interval = self._interval_override or float(getattr(tracker, "poll_interval", DEFAULT_POLL_INTERVAL))
            group = _Group(tracker, interval)
            self._groups[key] = group
            group.runner = asyncio.create_task(self._poll_loop(group), name=f"ork-poll-{job.tracker}-{job.executor}")
        return group

    async def add(self, job: TrackedJob) -> None:
        """Start tracking a job whose handle is already committed."""
        group = await self._group(job)
        group.jobs[job.task] = job
        group.wake.set()

    def discard(self, task: str) -> TrackedJob | None:
        for group in self._groups.values():
            job = group.jobs.pop(task, None)
            if job is not None:
                return job
        return None

    async def cancel(self, task: str) -> str | None:
        """Cancel the external job (a user's cancel or a timeout); returns an error message or None."""
        for (tracker_name, _), group in self._groups.items():
            job = group.jobs.pop(task, None)
            if job is None:
                continue
            cancel = getattr(group.tracker, "cancel", None)
            if cancel is None:
                return None
            try:
                await _call(cancel, job.handle)
            except Exception as exc:
                return f"cancelling the {tracker_name} job failed: {type(exc).__name__}: {exc}"
            return None
        return None

    async def _poll_loop(self, group: _Group) -> None:
        backoff = 0.0
        while True:
            if not group.jobs:
                group.wake.clear()
                await group.wake.wait()
            delay = group.interval + backoff
            await asyncio.sleep(delay)
            now = time.time()
            for job in [j for j in group.jobs.values() if j.deadline is not None and now >= j.deadline]:
                group.jobs.pop(job.task, None)
                self._post(JobEvent(job.task, job.attempt, "timeout", polled_at=now))
            jobs = list(group.jobs.values())
            if not jobs:
                continue
            batch_failed = False
            for start in range(0, len(jobs), BATCH_SIZE):
                batch = jobs[start : start + BATCH_SIZE]
                async with self._polls:
                    try:
                        results = await _call(group.tracker.poll, [j.handle for j in batch])
                        if len(results) != len(batch):
                            raise RuntimeError(f"tracker returned {len(results)} statuses for {len(batch)} handles")
                    except Exception as exc:
                        batch_failed = True
                        results = [exc] * len(batch)
                polled_at = time.time()
                for job, result in zip(batch, results):
                    self._apply(group, job, result, polled_at)
            backoff = min(MAX_BACKOFF, max(group.interval, backoff * 2 or group.interval)) if batch_failed else 0.0

    def _apply(self, group: _Group, job: TrackedJob, result: Any, polled_at: float) -> None:
        if job.task not in group.jobs:
            return  # cancelled or timed out while the poll was in flight
        if isinstance(result, BaseException) or not isinstance(result, JobStatus):
            error = (
                f"{type(result).__name__}: {result}"
                if isinstance(result, BaseException)
                else f"tracker returned {type(result).__name__}, not JobStatus"
            )
            job.failures += 1
            job.last_error = error
            if job.failures >= self._max_failures:
                group.jobs.pop(job.task, None)
                final = JobStatus.failed(f"polling failed {job.failures} times in a row; last error: {error}")
                self._post(JobEvent(job.task, job.attempt, "done", final, error, polled_at, job.failures))
            else:
                self._post(JobEvent(job.task, job.attempt, "poll", None, error, polled_at, job.failures))
            return
        job.failures = 0
        job.last_error = None
        if result.state is JobState.RUNNING:
            self._post(JobEvent(job.task, job.attempt, "poll", result, None, polled_at, 0))
        else:
            group.jobs.pop(job.task, None)
            self._post(JobEvent(job.task, job.attempt, "done", result, None, polled_at, 0))

    async def close(self) -> None:
        for group in self._groups.values():
            if group.runner is not None:
                group.runner.cancel()
        for group in self._groups.values():
            if group.runner is not None:
                try:
                    await group.runner
                except (asyncio.CancelledError, Exception):
                    pass
        self._groups.clear()
