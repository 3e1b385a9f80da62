"""Tasks with a ``queue:``: the scheduler's side of `ork worker`.

A queued task runs as a deferred job whose tracker is storage itself. The scheduler's
attempt does not call the executor: it enqueues a work item keyed by the attempt's
idempotency key (so a resumed attempt finds the item it enqueued, never a second one) and
returns ``Deferred(tracker="ork.queue", handle={"work_item": id})``. From there the usual
deferral machinery carries it: the handle is committed, the triggerer polls it (one batched
read of storage for every queued task of the run), ``ork resume`` re-adopts it, a timeout
or a cancel cancels the item. A worker whose claim expired makes the poll report the
attempt failed, and the task's retries enqueue the next attempt as a new item.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ork_core.deferred import Deferred, JobStatus
from ork_core.ownership import Owner
from ork_core.storage.base import LOST, Storage

TRACKER = "ork.queue"
"""The tracker name of a queued task's deferral; built into the scheduler, no plugin registers it."""
POLL_INTERVAL = 0.5
"""A poll is one indexed read of storage, not an API call: cheap enough to keep a queued task's latency low."""


def worker_name(worker: str | None) -> str:
    """``host/pid`` of a worker id (an owner token), for messages."""
    if not worker:
        return "?"
    owner = Owner.parse(worker)
    return f"{owner.host or '?'}/{owner.pid}"


def enqueue(
    storage: Storage, *, queue: str, run_id: str, task: str, attempt: int, key: str, payload: dict[str, Any],
) -> Deferred:
    """Enqueue one attempt (a no-op for a key already enqueued) and the deferral that tracks it."""
    item = storage.enqueue_work(run_id, task, attempt, queue, key, payload, time.time())
    return Deferred(TRACKER, {"work_item": item, "queue": queue}, external_id=f"{queue}/{item}")


class QueueTracker:
    """Polls work items in storage: the job tracker of every queued task."""

    poll_interval = POLL_INTERVAL
    max_poll_failures = 30
    """Storage that cannot be read for this many polls in a row fails the attempt (≈ a few minutes with backoff)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        items = self._storage.work_status([str(h["work_item"]) for h in handles])
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
        """A cancel or timeout: the worker holding the item learns at its next renewal and ends the attempt."""
        self._storage.cancel_work(str(handle["work_item"]))
