"""Polls deferred external jobs through their job trackers, in one asyncio loop.

Thousands of deferred jobs cost one process and one loop: each (tracker, executor) pair
gets one polling coroutine that asks about the jobs that are due, in batches. Each job
keeps its own schedule: its poll interval, and after a failed poll an exponential backoff,
so one flaky job neither hammers an API nor delays the others. A batch call that raises is
retried handle by handle, so one bad handle never fails the others; a job whose polls keep
failing is cancelled and failed with the last error after `max_poll_failures`. A task's
deadline is a timer of its own (not a poll), so a timeout fires on time even when polls are
rare or slow. Outcomes go back to the scheduler as events: the scheduler stays the only
writer of task states.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ork_core.deferred import JobState, JobStatus
from ork_core.executors import ExecutorManager
from ork_core.registry import Registry

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_MAX_POLL_FAILURES = 10
MAX_BACKOFF = 60.0
BATCH_SIZE = 200
COALESCE = 0.1
"""A job may be polled this fraction of its interval early (at most `MAX_COALESCE` s) to
join a batch that is due now, so jobs started a moment apart end up polled together."""
MAX_COALESCE = 1.0
CANCEL_TIMEOUT = 60.0
RECORD_EVERY = 10.0
"""A healthy job's poll time is sent to storage (for ``ork jobs``) at most this often;
a change in its error state is always sent at once."""


@dataclass(eq=False)
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
    interval: float = DEFAULT_POLL_INTERVAL
    next_poll: float = 0.0
    early: float = 0.0
    recorded_at: float = 0.0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


@dataclass(frozen=True)
class JobEvent:
    """What the triggerer tells the scheduler about one job."""

    task: str
    attempt: int
    kind: str  # "done" | "poll" | "log" | "timeout"
    status: JobStatus | None = None
    error: str | None = None
    polled_at: float = 0.0
    failures: int = 0


@dataclass(eq=False)
class _Group:
    tracker: Any
    name: str
    interval: float
    max_failures: int
    max_backoff: float
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    target: float = float("inf")
    """When the loop next wakes by itself; a new job due earlier wakes it sooner."""


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    result = await asyncio.to_thread(func, *args)
    if inspect.isawaitable(result):
        return await result
    return result


def _describe(result: object) -> str:
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {result}"
    return f"tracker returned {type(result).__name__}, not JobStatus"


class Triggerer:
    def __init__(
        self,
        registry: Registry,
        executors: ExecutorManager,
        post: Callable[[JobEvent], None],
        *,
        max_concurrent_polls: int = 8,
        max_poll_failures: int = DEFAULT_MAX_POLL_FAILURES,
        poll_interval: float | None = None,
        builtin: dict[str, Any] | None = None,
    ) -> None:
        self._registry = registry
        self._builtin = builtin or {}
        """Trackers the core provides (``ork.queue``): one instance for all jobs, no executor built for them."""
        self._executors = executors
        self._post = post
        self._polls = asyncio.Semaphore(max_concurrent_polls)
        self._max_failures = max_poll_failures
        self._interval_override = poll_interval
        self._groups: dict[tuple[str, str], _Group] = {}
        self._where: dict[str, _Group] = {}
        self._side: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return len(self._where)

    async def _group(self, job: TrackedJob) -> _Group:
        builtin = self._builtin.get(job.tracker)
        key = (job.tracker, "" if builtin is not None else job.executor)
        group = self._groups.get(key)
        if group is None:
            if builtin is not None:
                tracker = builtin
            else:
                cls = self._registry.get("tracker", job.tracker).load()
                executor = await self._executors.get(job.executor)
                tracker = cls(executor)
            interval = self._interval_override or float(getattr(tracker, "poll_interval", DEFAULT_POLL_INTERVAL))
            group = _Group(
                tracker,
                job.tracker,
                interval,
                int(getattr(tracker, "max_poll_failures", self._max_failures)),
                float(getattr(tracker, "max_backoff", MAX_BACKOFF)),
            )
            self._groups[key] = group
            group.runner = asyncio.create_task(self._poll_loop(group), name=f"ork-poll-{job.tracker}-{job.executor}")
        return group

    def _interval_for(self, group: _Group, handle: dict[str, Any]) -> float:
        if self._interval_override:
            return self._interval_override
        per_handle = getattr(group.tracker, "poll_interval_for", None)
        if callable(per_handle):
            try:
                value = per_handle(handle)
                if value is not None and float(value) > 0:
                    return float(value)
            except Exception:
                pass  # a handle the tracker cannot read fails in poll, with a message
        return group.interval

    async def add(self, job: TrackedJob) -> None:
        """Start tracking a job whose handle is already committed."""
        try:
            group = await self._group(job)
        except Exception as exc:  # unknown tracker, executor that cannot be built: fail this task, not the run
            status = JobStatus.failed(f"cannot track the external job with tracker {job.tracker!r}: {exc}")
            self._post(JobEvent(job.task, job.attempt, "done", status, polled_at=time.time()))
            return
        self.discard(job.task)
        now = time.time()
        job.interval = self._interval_for(group, job.handle)
        job.early = min(MAX_COALESCE, COALESCE * job.interval)
        job.next_poll = now + job.interval
        group.jobs[job.task] = job
        self._where[job.task] = group
        if job.deadline is not None:
            job.timer = asyncio.get_running_loop().call_later(max(0.0, job.deadline - now), self._expire, group, job)
        if job.next_poll < group.target:
            group.wake.set()

    def discard(self, task: str) -> TrackedJob | None:
        """Stop tracking a task's job without touching the external job."""
        group = self._where.pop(task, None)
        if group is None:
            return None
        job = group.jobs.pop(task, None)
        if job is not None and job.timer is not None:
            job.timer.cancel()
        return job

    async def cancel(self, task: str) -> str | None:
        """Cancel the external job (a user's cancel); returns an error message or None."""
        group = self._where.get(task)
        job = self.discard(task)
        if group is None or job is None:
            return None
        return await self._cancel_job(group, job)

    async def _cancel_job(self, group: _Group, job: TrackedJob) -> str | None:
        cancel = getattr(group.tracker, "cancel", None)
        if not callable(cancel):
            return f"job tracker {group.name!r} cannot cancel jobs; the external job may still be running"
        try:
            await asyncio.wait_for(_call(cancel, job.handle), CANCEL_TIMEOUT)
        except TimeoutError:
            return f"cancelling the {group.name} job did not finish within {CANCEL_TIMEOUT:g}s"
        except Exception as exc:
            return f"cancelling the {group.name} job failed: {_describe(exc)}"
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def _expire(self, group: _Group, job: TrackedJob) -> None:
        """The task's timeout ran out while its job was deferred: cancel the job, then report."""
        if group.jobs.get(job.task) is not job:
            return
        self.discard(job.task)

        async def end() -> None:
            error = await self._cancel_job(group, job)
            self._post(JobEvent(job.task, job.attempt, "timeout", error=error, polled_at=time.time(), failures=job.failures))

        self._spawn(end())

    def _give_up(self, group: _Group, job: TrackedJob, polled_at: float) -> None:
        """Polls failed too often in a row: ork stops watching, so it cancels the job rather than orphan it."""
        self.discard(job.task)

        async def end() -> None:
            message = f"polling failed {job.failures} times in a row; last error: {job.last_error}"
            error = await self._cancel_job(group, job)
            if error:
                message += f"; {error}"
            status = JobStatus.failed(message)
            self._post(JobEvent(job.task, job.attempt, "done", status, job.last_error, polled_at, job.failures))

        self._spawn(end())

    async def _poll_loop(self, group: _Group) -> None:
        while True:
            if not group.jobs:
                group.target = float("inf")
                group.wake.clear()
                await group.wake.wait()
                continue
            now = time.time()
            first = min(j.next_poll for j in group.jobs.values())
            if first > now:
                group.target = first
                group.wake.clear()
                try:
                    await asyncio.wait_for(group.wake.wait(), first - now)
                except TimeoutError:
                    pass
                continue
            group.target = 0.0  # polling now; jobs added meanwhile are looked at after this round
            due = [j for j in group.jobs.values() if j.next_poll - j.early <= now]
            try:
                await asyncio.gather(
                    *(self._poll_batch(group, due[i : i + BATCH_SIZE]) for i in range(0, len(due), BATCH_SIZE))
                )
            except Exception as exc:  # a bug in ork itself: fail the jobs loudly instead of waiting forever
                for job in list(group.jobs.values()):
                    self.discard(job.task)
                    status = JobStatus.failed(f"ork's triggerer failed: {_describe(exc)}")
                    self._post(JobEvent(job.task, job.attempt, "done", status, polled_at=time.time()))

    async def _poll(self, group: _Group, handles: list[dict[str, Any]]) -> list[Any] | Exception:
        """One tracker call; a call that raises (or answers badly) comes back as that exception."""
        async with self._polls:
            try:
                results = list(await _call(group.tracker.poll, handles))
            except Exception as exc:
                return exc
        if len(results) != len(handles):
            return RuntimeError(f"tracker {group.name!r} returned {len(results)} statuses for {len(handles)} handles")
        return results

    async def _poll_batch(self, group: _Group, batch: list[TrackedJob]) -> None:
        results = await self._poll(group, [j.handle for j in batch])
        if isinstance(results, Exception):
            if len(batch) == 1:
                results = [results]
            else:  # find the handle that broke the batch: ask about each alone
                singles = await asyncio.gather(*(self._poll(group, [j.handle]) for j in batch))
                results = [r if isinstance(r, Exception) else r[0] for r in singles]
        polled_at = time.time()
        for job, result in zip(batch, results):
            self._apply(group, job, result, polled_at)

    def _apply(self, group: _Group, job: TrackedJob, result: Any, polled_at: float) -> None:
        if group.jobs.get(job.task) is not job:
            return  # cancelled or timed out while the poll was in flight
        if not isinstance(result, JobStatus):
            job.failures += 1
            job.last_error = _describe(result)
            if job.failures >= group.max_failures:
                self._give_up(group, job, polled_at)
                return
            backoff = min(max(group.max_backoff, job.interval), job.interval * 2**job.failures)
            job.next_poll = polled_at + backoff
            job.recorded_at = polled_at
            self._post(JobEvent(job.task, job.attempt, "poll", None, job.last_error, polled_at, job.failures))
            return
        recovered = job.failures > 0
        job.failures = 0
        job.last_error = None
        if result.state is JobState.RUNNING:
            job.next_poll = polled_at + job.interval
            if recovered or polled_at - job.recorded_at >= RECORD_EVERY:
                job.recorded_at = polled_at
                self._post(JobEvent(job.task, job.attempt, "poll", result, None, polled_at, 0))
            elif result.log:
                self._post(JobEvent(job.task, job.attempt, "log", result, None, polled_at, 0))
        else:
            self.discard(job.task)
            self._post(JobEvent(job.task, job.attempt, "done", result, None, polled_at, 0))

    async def close(self) -> None:
        """Stop polling (the run ended or ork is going down); external jobs are left alone."""
        tasks = [g.runner for g in self._groups.values() if g.runner is not None] + list(self._side)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for group in self._groups.values():
            for job in group.jobs.values():
                if job.timer is not None:
                    job.timer.cancel()
        self._groups.clear()
        self._where.clear()
