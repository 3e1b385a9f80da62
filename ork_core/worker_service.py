"""`ork worker`: runs the attempts of tasks with a ``queue:`` on the machine it is started on.

The scheduler never talks to a worker: it enqueues a work item in storage and polls it
(`ork_core.workqueue`). A worker claims items of its queues with a lease (``SKIP LOCKED`` on
PostgreSQL, so workers never wait on each other), runs each with the executor installed
here, as the scheduler would (`task_context`, `call_executor`), and renews its leases while
they run. The outcome is written only while the lease holds (`Storage.finish_work`): a
worker that was killed, or cut off for longer than its lease, has its attempts counted as
lost by the scheduler, which retries them as new items, and can never overwrite that.

SIGTERM, SIGINT, SIGHUP: claim nothing more, cancel the running attempts, end their local
process trees as the scheduler does, and give their items back to the queue (`release_work`)
so another worker runs them at once, as the same attempt: a stopped worker, like a stopped
scheduler, costs no retry (a killed one does: its attempts are lost). Exit 128 + the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import time
from typing import Any

from ork_core.deferred import Deferred
from ork_core.errors import OrkError, StorageError, TaskError
from ork_core.executors import ExecutorManager
from ork_core.ownership import Owner
from ork_core.plugins import Plugins
from ork_core.proctree import (
    KILL_WAIT, WORKER_MARKER, end_group, marked_processes, processes_with, signal_group, task_markers,
)
from ork_core.project import Project
from ork_core.scheduler import (
    MAX_ERROR, STOP_SIGNALS, Scheduler, StorageSink, call_executor, encode_output, task_context, task_raised,
    task_traceback, to_output,
)
from ork_core.context import cap_line
from ork_core.secrets import _masked_json, mask
from ork_core.storage.base import JSONText, Storage, WorkItem, WorkOutcome
from ork_core.workers import DaemonPool
from ork_core.workflow import CompiledWorkflow
from ork_core.workqueue import worker_name

LEASE = 30.0
"""Seconds a worker's claim on an attempt lasts unless renewed: how long after a worker dies its
attempts are counted as lost and retried."""


class Worker:
    """One `ork worker` process: claims, runs and reports attempts of its queues until stopped."""

    def __init__(
        self, *, project: Project, plugins: Plugins, storage: Storage, queues: tuple[str, ...],
        concurrency: int = 1, lease: float = LEASE, poll: float = 0.5, kill_grace: float = 5.0,
    ) -> None:
        self.project = project
        self.plugins = plugins
        self.storage = storage
        self.queues = queues
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.kill_grace = kill_grace
        owner = Owner.current()
        self.id = owner.token
        self.host = owner.host
        self.name = worker_name(self.id)
        self.sink = StorageSink(storage)
        self.executors = ExecutorManager(project.resolve, plugins.hooks)
        self._workflows: dict[str, CompiledWorkflow] = {}
        self._running: dict[str, tuple[WorkItem, asyncio.Task[None]]] = {}
        self._outcomes: list[tuple[WorkItem, WorkOutcome, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._signal: int | None = None
        self._wake = asyncio.Event()

    def _stop(self, signum: int) -> None:
        if self._signal is None:
            self._signal = signum
        self._wake.set()

    async def serve(self) -> int:
        """Work until a signal; returns it (0 if none)."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop, sig)
                installed.append(sig)
        self._pool = DaemonPool("ork-worker")
        await asyncio.to_thread(self._end_orphans)
        self._forget_dead_workers()
        self.storage.heartbeat_worker(self.id, self.host, os.getpid(), self.queues)
        print(f"ork worker {self.name} serving {', '.join(self.queues)} (concurrency {self.concurrency})", flush=True)
        next_beat = time.monotonic() + self.lease / 3
        # inherited by every task process: a scheduler of this machine that takes over one of
        # their runs, or stops, tells them from its own leftovers and leaves them to this worker
        previous_marker = os.environ.get(WORKER_MARKER)
        os.environ[WORKER_MARKER] = self.id
        try:
            while self._signal is None:
                if time.monotonic() >= next_beat:
                    try:
                        self._heartbeat()
                    except StorageError as exc:  # retried next beat; leases that lapse meanwhile are retried elsewhere
                        print(f"heartbeat failed: {exc}", flush=True)
                    next_beat = time.monotonic() + self.lease / 3
                free = self.concurrency - len(self._running)
                try:
                    claimed = self.storage.claim_work(self.id, self.queues, self.lease, free) if free > 0 else []
                except StorageError as exc:
                    print(f"claiming work failed: {exc}", flush=True)
                    claimed = []
                for item in claimed:
                    task = asyncio.create_task(self._attempt(item), name=f"ork-work-{item.id}")
                    self._running[item.id] = (item, task)
                    task.add_done_callback(functools.partial(self._ended, item.id))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(self.poll, max(0.01, next_beat - time.monotonic())))
            await self._stop_running()
        finally:
            if previous_marker is None:
                os.environ.pop(WORKER_MARKER, None)
            else:
                os.environ[WORKER_MARKER] = previous_marker
            for sig in installed:
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                self.sink.flush()
            with contextlib.suppress(StorageError):
                self.storage.remove_worker(self.id)
            await self.executors.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
        return self._signal or 0

    def _forget_dead_workers(self) -> None:
        """Drop the records of killed workers of this host, so `ork workers` lists the live ones.

        Only this host's: whether a worker elsewhere is gone, no process here can tell (its
        last heartbeat in `ork workers` says how long it has been silent).
        """
        try:
            for record in self.storage.list_workers():
                if record.id != self.id and record.host == self.host and not Owner.parse(record.id).alive():
                    self.storage.remove_worker(record.id)
        except StorageError as exc:  # only a listing to tidy: not a reason to stop serving
            print(f"could not tidy the list of workers: {exc}", flush=True)

    def _end_orphans(self) -> None:
        """End what killed workers of this host left running: their attempts are lost, and retried elsewhere.

        A worker killed outright (kill -9, the OOM killer) cannot end its attempts' process
        trees; they would run on beside the retry. Found by the worker id they inherited
        (`WORKER_MARKER`) whose process is gone, as `ork resume` finds a killed ork's.
        """
        found = (processes_with(WORKER_MARKER) or {}).values()
        # only a worker id (host/pid/start) whose process is gone: an empty or foreign value is no orphan
        groups = {pgid for token, pgid in found if token.count("/") == 2 and not Owner.parse(token).alive()}
        for pgid in sorted(groups):
            print(f"ending process group {pgid}, left running by a killed worker", flush=True)
            end_group(pgid, grace=self.kill_grace)

    def _ended(self, item_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(item_id, None)
        self._wake.set()

    def _heartbeat(self) -> None:
        """Renew the leases of running attempts; one not renewed is no longer this worker's: stop it."""
        with contextlib.suppress(StorageError):
            self.sink.flush()
        ids = list(self._running)
        held = self.storage.renew_work(self.id, ids, self.lease) if ids else set()
        for item_id in ids:
            if item_id not in held and item_id in self._running:
                item, task = self._running[item_id]
                print(f"attempt {item.attempt} of {item.run_id}/{item.task}: claim lost or cancelled; stopping it", flush=True)
                task.cancel()
        self.storage.heartbeat_worker(self.id, self.host, os.getpid(), self.queues)

    async def _stop_running(self) -> None:
        """A signal: cancel every attempt, end its processes, and give it back as failed so it is retried now."""
        running = list(self._running.values())
        for _, task in running:
            task.cancel()
        if running:
            await asyncio.wait([t for _, t in running], timeout=self.kill_grace + 10)
        for item, _ in running:
            await self._end_trees(item)
            self.sink.log(item.run_id, item.task, item.attempt, time.time(), "WARNING", "log",
                          f"worker {self.name} was stopped (signal {self._signal}): the attempt goes back to its queue")
        if running:
            with contextlib.suppress(StorageError):  # else their leases end, and the scheduler retries them
                self.storage.release_work(self.id, [item.id for item, _ in running])

    async def _end_trees(self, item: WorkItem) -> None:
        """What the attempt started on this machine, found by its markers, SIGKILLed after the grace."""
        markers = task_markers(item.run_id, item.task, item.attempt)
        for grace in (self.kill_grace, KILL_WAIT):
            deadline = time.monotonic() + grace
            while (marked := marked_processes(markers)) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not marked:
                return
            for _, pgid in marked.values():
                signal_group(pgid, signal.SIGKILL)

    def _workflow(self, hash_: str) -> CompiledWorkflow:
        workflow = self._workflows.get(hash_)
        if workflow is None:
            data, source = self.storage.load_workflow(hash_)
            workflow = self._workflows[hash_] = CompiledWorkflow.from_json(data, hash_, source)
        return workflow

    async def _attempt(self, item: WorkItem) -> None:
        p: dict[str, Any] = item.payload
        status, output, error = "failed", None, None
        ctx = None
        executor: object | None = None
        deadline: asyncio.Timeout | None = None
        try:
            workflow = self._workflow(p["workflow_hash"])
            spec = workflow.tasks[p["task"]]
            ctx = task_context(
                spec=spec, workflow=workflow, project=self.project, run_id=item.run_id, attempt=item.attempt,
                try_number=int(p["try_number"]), idempotency_key=p.get("idempotency_key") or "", params=p["params"],
                sink=self.sink, record_process_group=lambda pgid: None,
            )
            origin = p.get("origin") or {}
            ctx.trigger = origin.get("trigger", "manual")
            ctx.logical_date = origin.get("logical_date")
            ctx.interval_start, ctx.interval_end = origin.get("interval_start"), origin.get("interval_end")
            ctx.log.info("running on worker %s (queue %s)", self.name, item.queue)
            executor = await self.executors.get(spec.executor)
            remaining = None
            if spec.timeout is not None:
                remaining = max(0.001, spec.timeout - (time.time() - float(p.get("started_at") or time.time())))
            deadline = asyncio.timeout(remaining)
            async with deadline:
                result = await call_executor(
                    self.executors, self.plugins.hooks, self._pool, executor, ctx, spec, dict(p.get("upstream") or {}),
                    adopt=bool(p.get("adopt")),
                )
            if isinstance(result, Deferred):
                raise TaskError("the executor deferred an external job; a task with a queue: cannot defer (yet)")
            value = to_output(result, self.executors.resolved(spec.executor).spec.output_model)
            encoded = encode_output(value, self.project.settings.max_output_bytes)
            masked = mask(encoded)
            output = encoded if masked == encoded else JSONText(json.dumps(_masked_json(encoded, masked)))
            status = "success"
        except asyncio.CancelledError:
            if ctx is not None:
                ctx.cancel_event.set()
                cancel = getattr(executor, "cancel", None)
                if callable(cancel):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.to_thread(cancel, ctx), self.kill_grace + 10)
            await self._end_trees(item)
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                error = f"timed out after {spec.timeout:g}s"
            elif ctx is not None:
                error = Scheduler._failure(exc, ctx).error
            else:  # the snapshot or the executor could not be loaded here
                error = f"{exc}" if isinstance(exc, OrkError) else f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # SystemExit … raised by the task: its failure, not the worker's exit
            if ctx is not None:
                ctx.log.error("%s", task_traceback(exc))
            error = task_raised(exc)
        error = None if error is None else mask(cap_line(error, MAX_ERROR))
        await self._report(item, WorkOutcome(item.id, status, output, error))

    async def _report(self, item: WorkItem, outcome: WorkOutcome) -> None:
        """Have the outcome written with the others that end meanwhile, and wait until it is.

        Until then the attempt counts as running here, so its lease is still renewed. One
        write at a time: the outcomes that end while one is in flight go in the next, so a
        busy worker commits once per batch, not once per task.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((item, outcome, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_outcomes(), name="ork-worker-outcomes")
        await future

    async def _write_outcomes(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                recorded = await asyncio.to_thread(self._write, [outcome for _, outcome, _ in batch])
            except StorageError as exc:  # their leases lapse, and the scheduler retries them as lost
                print(f"recording {len(batch)} outcome(s) failed: {exc}", flush=True)
                recorded = None
            for item, outcome, future in batch:
                if recorded is not None and outcome.id not in recorded:
                    print(f"attempt {item.attempt} of {item.run_id}/{item.task} ended ({outcome.status}) after its "
                          "claim was lost; not recorded", flush=True)
                if not future.done():
                    future.set_result(None)

    def _write(self, outcomes: list[WorkOutcome]) -> set[str]:
        with contextlib.suppress(StorageError):
            self.sink.flush()  # the attempts' log lines land before their outcomes are read
        return self.storage.finish_work(self.id, outcomes)
