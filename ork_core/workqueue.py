"""Tasks with a ``queue:``: the scheduler's side of `ork worker`.

A queued task runs as a deferred job whose tracker is storage itself. The scheduler's
attempt does not call the executor: it enqueues a work item keyed by the attempt's
idempotency key (so a resumed attempt finds the item it enqueued, never a second one) and
returns ``Deferred(tracker="ork.queue", handle={"work_item": id})`` (every queued attempt a
scheduler starts in one pass is enqueued in one transaction). From there the usual
deferral machinery carries it: the handle is committed, the triggerer polls it (one batched
read of storage for the queued tasks of every run of the process), ``ork resume`` re-adopts it, a timeout
or a cancel cancels the item. A worker whose claim expired makes the poll report the
attempt failed, and the task's retries enqueue the next attempt as a new item.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from ork_core.deferred import Deferred, JobStatus
from ork_core.ownership import Owner
from ork_core.storage.base import LOST, NewWork, Storage, WorkItem

TRACKER = "ork.queue"
"""The tracker name of a queued task's deferral; built into the scheduler, no plugin registers it."""
POLL_INTERVAL = 0.5
"""A poll is one indexed read of storage, not an API call: cheap enough to keep a queued task's latency low."""
COALESCE_WINDOW = 0.02
"""How long a poll waits for the polls of other runs to join its read."""


def worker_name(worker: str | None) -> str:
    """``host/pid`` of a worker id (an owner token), for messages."""
    if not worker:
        return "?"
    owner = Owner.parse(worker)
    return f"{owner.host or '?'}/{owner.pid}"


def enqueue(storage: Storage, items: Sequence[NewWork]) -> list[Deferred]:
    """Enqueue attempts in one transaction (a no-op for a key already enqueued), and the deferrals that track them."""
    ids = storage.enqueue_work(items, time.time())
    return [Deferred(TRACKER, {"work_item": id_, "queue": item.queue}, external_id=f"{item.queue}/{id_}")
            for item, id_ in zip(items, ids)]


class QueueTracker:
    """Polls work items in storage: the job tracker of every queued task of a process.

    `ork scheduler` shares one between all the runs it executes, each with a triggerer of
    its own: polls that arrive within `COALESCE_WINDOW` of each other are answered by one
    read, so a hundred runs waiting on workers cost a few reads a second, not a hundred.
    """

    poll_interval = POLL_INTERVAL
    max_poll_failures = 30
    """Storage that cannot be read for this many polls in a row fails the attempt (≈ a few minutes with backoff)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._owner = Owner.current().token
        """Every run this process executes is claimed by this token (`Scheduler.owner`)."""
        self._waiting: list[asyncio.Future[dict[str, WorkItem]]] = []
        self._wanted: dict[str, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    async def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, WorkItem]] = loop.create_future()
        self._waiting.append(future)
        self._wanted.update(dict.fromkeys(str(h["work_item"]) for h in handles))
        if self._timer is None:
            self._timer = loop.call_later(COALESCE_WINDOW, self._read)
        items = await future
        return self._statuses(handles, items)

    def _read(self) -> None:
        """One read of storage for every poll that waits; its answer (or error) goes to each."""
        self._timer = None
        waiting, self._waiting = self._waiting, []
        ids, self._wanted = list(self._wanted), {}
        read = asyncio.ensure_future(asyncio.to_thread(self._storage.work_status, ids))

        def answer(done: asyncio.Future[dict[str, WorkItem]]) -> None:
            for future in waiting:
                if future.done():  # its poll was cancelled: the run ended meanwhile
                    continue
                if done.cancelled():
                    future.cancel()
                elif (exc := done.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(done.result())

        read.add_done_callback(answer)

    @staticmethod
    def _statuses(handles: list[dict[str, Any]], items: dict[str, WorkItem]) -> list[JobStatus | BaseException]:
        results: list[JobStatus | BaseException] = []
        for handle in handles:
            item = items.get(str(handle["work_item"]))
            if item is None:
                results.append(JobStatus.failed(f"work item {handle['work_item']} is not in storage any more"))
            elif item.status == "queued":
                results.append(JobStatus.running(queue=item.queue, waiting=True))
            elif item.status == "running":
                results.append(JobStatus.running(queue=item.queue, worker=worker_name(item.worker)))
            elif item.status == "success":
                results.append(JobStatus.succeeded(json.loads(item.output) if item.output is not None else None))
            elif item.status == LOST:
                results.append(JobStatus.failed(f"worker {worker_name(item.worker)} lost: its claim expired"))
            elif item.status == "cancelled":
                results.append(JobStatus.failed("the work item was cancelled"))
            else:
                results.append(JobStatus.failed(item.error or f"the attempt failed on worker {worker_name(item.worker)}"))
        return results

    def cancel(self, handle: dict[str, Any]) -> None:
        """A cancel or timeout: the worker holding the item learns at its next renewal and ends the attempt.

        Only while this process holds the item's run: one that lost it leaves the attempt alone.
        """
        self._storage.cancel_work(str(handle["work_item"]), owner=self._owner)
