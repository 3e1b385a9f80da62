"""The run loop: asyncio, event-driven, every state change committed before it is acted on.

One loop iteration takes every event that is waiting (a task finished, a retry is due, a
deferred job ended), decides what changes, commits all of those changes in one
transaction, and only then starts tasks and tells plugins and the terminal. A finished
task releases its dependents in the same iteration, so there is no polling sleep on the
hot path, and a kill at any moment leaves storage describing exactly what was started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import math
import os
import secrets
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pydantic_core
from pydantic import BaseModel, ValidationError

from ork_core.context import Context, Metrics, TaskLogger, cap_line, make_idempotency_key
from ork_core.deferred import Deferred, JobState
from ork_core.errors import KickoffUncertain, OrkError, RunClaimedError, StorageError, StorageWriteError, TaskError, TaskSkipped
from ork_core.executors import ExecutorManager
from ork_core.ownership import Owner
from ork_core.plugins import Plugins
from ork_core.proctree import KILL_WAIT, end_group, group_members, run_processes, signal_group
from ork_core.project import Project
from ork_core.schedules import utc_iso
from ork_core.scratch import sweep as sweep_scratch
from ork_core.secrets import mask, mask_batch
from ork_core.slots import SharedSlots
from ork_core.storage.base import (
    FINAL_TASK_STATUSES, QUEUED, JSONText, LogLine, Metric, NewWork, RunOrigin, RunUpdate, Storage, TaskUpdate,
)
from ork_core import workqueue
from ork_core.triggerer import JobEvent, TrackedJob, Triggerer
from ork_core.workers import DaemonPool, run_sync
from ork_core.workflow import CompiledTask, CompiledWorkflow, required_params
from ork_core.yamlfile import suggest

FINAL = FINAL_TASK_STATUSES
BAD = frozenset({"failed", "upstream_failed", "cancelled"})
MAX_ERROR = 64 * 1024
"""Characters of a task's error that are stored and shown: a task raising an exception with a
100 MB message must not put 100 MB in every copy of the task's row (its whole text, traceback
included, is in the task's log, whose lines are cut the same way)."""
GROUP_COMMIT_DELAY = 0.05
"""Seconds a started process group waits to be committed, batched with the others started
meanwhile; a task that ends sooner never writes one. `ork resume` finds a tree started in
that window by the run id in its processes' environment (`proctree.run_processes`)."""


class Reporter(Protocol):
    """Receives progress after it was committed; the CLI draws it, tests record it."""

    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None: ...

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None: ...

    def run_finished(self, run_id: str, status: str) -> None: ...


class NullReporter:
    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None:
        pass

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        pass

    def run_finished(self, run_id: str, status: str) -> None:
        pass


class StorageSink:
    """Buffers task log lines and metrics; they are written with the next state batch.

    Written sooner when `limit` lines or `char_limit` characters are waiting: a task printing
    one 100 MB line (logged as 1,600 pieces of 64 KiB) must not have all of it held here.

    A task's logging flushes a full buffer from the task's own thread. If storage refuses
    that write (a full disk), the error is ork's, not the task's: the lines stay buffered,
    the task goes on, and `on_write_error` tells the loop, whose next commit retries the
    write and stops the run, resumably, if it fails again.
    """

    def __init__(
        self, storage: Storage, limit: int = 2000, char_limit: int = 4 * 1024 * 1024,
        on_write_error: Callable[[], None] | None = None,
    ) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._logs: list[LogLine] = []
        self._metrics: list[Metric] = []
        self._limit = limit
        self._failed = False
        self._on_write_error = on_write_error
        self._chars = 0
        self._char_limit = char_limit
        self._muted = False

    def mute(self) -> None:
        """Drop every line and metric from now on: the run is another process's now (`Scheduler.abandon`)."""
        with self._lock:
            self._muted = True
            self._logs, self._metrics, self._chars = [], [], 0

    def log(self, run_id: str, task: str, attempt: int, ts: float, level: str, stream: str, line: str) -> None:
        with self._lock:
            if self._muted:
                return
            self._logs.append(LogLine(run_id, task, attempt, ts, level, stream, line))
            self._chars += len(line)
            full = (len(self._logs) >= self._limit or self._chars >= self._char_limit) and not self._failed
        if full:
            logs, metrics = self.take()
            try:
                self._storage.write((), mask_batch((), logs), metrics)
            except StorageError:
                with self._lock:  # kept for the loop's next commit, ahead of lines logged since
                    self._logs[:0], self._metrics[:0] = logs, metrics
                    self._chars += sum(len(log.line) for log in logs)
                    self._failed = True  # no retry per logged line: the loop's commit retries
                if self._on_write_error is not None:
                    self._on_write_error()

    def metric(
        self, run_id: str, task: str, attempt: int, ts: float, name: str, value: float, labels: Mapping[str, str]
    ) -> None:
        with self._lock:
            if self._muted:
                return
            self._metrics.append(Metric(run_id, task, attempt, ts, name, value, dict(labels)))

    def take(self) -> tuple[list[LogLine], list[Metric]]:
        with self._lock:
            logs, metrics = self._logs, self._metrics
            self._logs, self._metrics = [], []
            self._failed = False
            self._chars = 0
        return logs, metrics

    def flush(self) -> None:
        logs, metrics = self.take()
        self._storage.write((), mask_batch((), logs), metrics)


@dataclass
class TaskState:
    spec: CompiledTask
    status: str = "pending"
    attempt: int = 0
    try_number: int = 0
    remaining: int = 0
    started_at: float | None = None
    error: str | None = None
    idempotency_key: str | None = None
    resume_adopt: bool = False
    uncertain_retries: int = 0
    next_try_at: float | None = None  # from storage, for `ork resume` of a task waiting to retry
    handle: tuple[str, dict[str, Any]] | None = None
    runner: asyncio.Task[None] | None = None
    ctx: Context | None = None


@dataclass(frozen=True)
class Outcome:
    status: str  # success | failed | deferred | cancelled | skipped
    output: Any = None
    error: str | None = None
    deferred: Deferred | None = None
    timed_out: bool = False
    uncertain: bool = False  # KickoffUncertain: the retry keeps the try and adopts first
    encoded: JSONText | None = None


@dataclass
class RunResult:
    run_id: str
    status: str
    errors: list[str] = field(default_factory=list)
    signal: int | None = None
    """The signal that stopped the run (status ``stopped``): the CLI exits with 128 + it."""


STOPPED = "stopped"
"""The run's status after a signal stopped ork: not final, `ork resume` continues it."""


def task_raised(exc: BaseException) -> str:
    """The error text of a task that raised a BaseException (``SystemExit: 3``).

    `SystemExit`, `KeyboardInterrupt`, `GeneratorExit` … from a task's code are the task's
    failure, never an exit of ork: otherwise every `ork resume` would die the same way.
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} raised by the task"


_ORK_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep


def task_traceback(exc: BaseException) -> str:
    """The traceback of a task's exception from the task's own code on: ork's frames above it are noise.

    The frames by which ork called the task (the scheduler, its worker threads, asyncio) say
    nothing about what went wrong and would put where ork is installed into every log; an
    exception raised inside ork itself keeps all its frames.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith((_ORK_DIR, _ASYNCIO_DIR)):
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def coerce_params(workflow: CompiledWorkflow, given: Mapping[str, str]) -> dict[str, Any]:
    """Workflow defaults overlaid with ``--param k=v``; a value takes its default's type.

    A workflow that declares ``params`` refuses others: a misspelled ``--param`` would
    otherwise run the workflow on the default without a word.
    """
    params = dict(workflow.params)
    unknown = [key for key in given if workflow.params and key not in workflow.params]
    if unknown:
        raise OrkError(
            f"{workflow.file}: --param {unknown[0]!r} is not a parameter of this workflow"
            f"{suggest(unknown[0], workflow.params)}; declared: {', '.join(workflow.params)}"
        )
    for key, raw in given.items():
        default = workflow.params.get(key)
        value: Any = raw
        if isinstance(default, bool):
            if raw.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise OrkError(f"--param {key}={raw!r}: expected a boolean (true/false)")
            value = raw.lower() in {"true", "1", "yes"}
        elif isinstance(default, int):
            try:
                value = int(raw)
            except ValueError:
                raise OrkError(f"--param {key}={raw!r}: expected an integer") from None
        elif isinstance(default, float):
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):  # inf/nan would be stored as JSON no other reader accepts
                raise OrkError(f"--param {key}={raw!r}: expected a finite number") from None
        params[key] = value
    missing = sorted(p for p in required_params(workflow) if params.get(p) is None)
    if missing:
        raise OrkError(
            f"{workflow.file}: run parameter(s) {', '.join(missing)} are required; pass "
            + " ".join(f"--param {m}=…" for m in missing)
        )
    return params


def to_output(result: Any, output_model: type[BaseModel] | None) -> Any:
    """The JSON form of what `run` returned, validated against the declared output model."""
    if output_model is not None and not isinstance(result, output_model):
        try:
            result = output_model.model_validate(result)
        except ValidationError as exc:
            raise TaskError(f"output does not match {output_model.__name__}: {exc}") from None
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    try:
        return pydantic_core.to_jsonable_python(result)
    except pydantic_core.PydanticSerializationError as exc:
        raise TaskError(f"output is not JSON-serialisable: {exc}") from None


def encode_output(output: Any, limit: int) -> JSONText:
    """The JSON text storage keeps for an output (encoded here, once); over `limit` bytes fails the task.

    Every output is held in memory for the tasks that depend on it and read back by `ork runs
    show`, so a 100 MB one would cost ork hundreds of MB: big results go to files.
    """
    text = json.dumps(output)  # what storage stored before; ASCII, so characters are bytes
    if len(text) > limit:
        raise TaskError(
            f"output is {len(text):,} bytes as JSON, over the limit of {limit:,} (max_output_bytes in ork.yaml); "
            "write big results to a file (e.g. in ctx.ensure_artifact_dir()) and return its path"
        )
    return JSONText(text)


def task_context(
    *, spec: CompiledTask, workflow: CompiledWorkflow, project: Project, run_id: str, attempt: int, try_number: int,
    idempotency_key: str, params: dict[str, Any], sink: Any, record_process_group: Callable[[int | None], None],
) -> Context:
    """The Context of one attempt: shared by the scheduler and `ork worker`, so a task sees the same either way.

    The run's trigger and logical date are the caller's to set (the scheduler reads them
    from storage once; a worker gets them in the work item).
    """
    return Context(
        task_name=spec.name,
        workflow_name=workflow.name,
        run_id=run_id,
        attempt=attempt,
        log=TaskLogger(sink, run_id, spec.name, attempt),
        metrics=Metrics(sink, run_id, spec.name, attempt),
        params=params,
        task_config=spec.task_config,
        config_file=spec.config_file,
        idempotency_key=idempotency_key,
        try_number=try_number,
        env=spec.env,
        workflow_dir=workflow.dir,
        project_dir=project.dir,
        allowed_path_roots=project.path_roots,
        timeout=spec.timeout,
        executor_name=spec.executor,
        record_process_group=record_process_group,
        loop=asyncio.get_running_loop(),
    )


async def maybe_thread(pool: DaemonPool, func: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(pool, func, *args)
    return await result if inspect.isawaitable(result) else result


async def call_executor(
    executors: ExecutorManager, hooks: Any, pool: DaemonPool, executor: object, ctx: Context, spec: CompiledTask,
    upstream: dict[str, Any], *, adopt: bool,
) -> Any:
    """One attempt's call of the executor (``adopt`` first when asked), as the scheduler and `ork worker` make it."""
    resolved = executors.resolved(spec.executor)
    if adopt and resolved.spec.has("adopt"):
        adopted = await maybe_thread(pool, getattr(executor, "adopt"), ctx.idempotency_key, ctx)
        if adopted is not None:
            ctx.log.info("adopted the external job started before ork restarted (key %s)", ctx.idempotency_key)
            return adopted
    if hooks.task_run_wrapped:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            pool,
            lambda: hooks.task_run(ctx=ctx, executor=executor, config_file=spec.config_file, upstream=upstream),
        )
    run = getattr(executor, "run")
    if resolved.spec.run_is_async:
        return await run(spec.config_file, ctx, upstream)
    result = await run_sync(pool, asyncio.get_running_loop(), run, spec.config_file, ctx, upstream)
    if inspect.isawaitable(result):
        result = await result
    return result


class Scheduler:
    """Executes one run of a compiled workflow to a final status."""

    def __init__(
        self,
        *,
        project: Project,
        plugins: Plugins,
        storage: Storage,
        workflow: CompiledWorkflow,
        run_id: str,
        params: dict[str, Any],
        reporter: Reporter | None = None,
        max_concurrency: int | None = None,
        poll_interval: float | None = None,
        kill_grace: float = 5.0,
        origin: RunOrigin | None = None,
        shared: SharedSlots | None = None,
        queue_tracker: workqueue.QueueTracker | None = None,
    ) -> None:
        self.project = project
        self.plugins = plugins
        self.hooks = plugins.hooks
        self.storage = storage
        self.workflow = workflow
        self.run_id = run_id
        self.params = params
        self.origin = origin or RunOrigin()
        """Why the run exists and which tick it stands for: what tasks see as ``ctx.logical_date``…"""
        self._run_fields: tuple[str, str, str | None, str | None] | None = None
        self.reporter = reporter or NullReporter()
        self.limit = max_concurrency or workflow.max_concurrency or project.settings.max_concurrency
        self.kill_grace = kill_grace
        self.max_output_bytes = project.settings.max_output_bytes
        self._poll_interval = poll_interval
        self.sink = StorageSink(storage, on_write_error=self._sink_write_failed)
        self.executors = ExecutorManager(project.resolve, self.hooks)
        self.tasks: dict[str, TaskState] = {n: TaskState(t) for n, t in workflow.tasks.items()}
        self.outputs: dict[str, Any] = {}
        self._updates: list[TaskUpdate | RunUpdate] = []
        self._notices: list[tuple[str, str, str, int, str | None]] = []
        self._ready: dict[str, deque[str]] = {}
        self._running_per_executor: dict[str, int] = {}
        self._running = 0
        self._to_start: list[TaskState] = []
        self._redispatch = False
        self._events: asyncio.Queue[tuple[str, Any]] | None = None
        self._cancelling = False
        self._pool: DaemonPool | None = None
        self._triggerer: Triggerer | None = None
        self._to_track: list[TaskState] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._retrying = 0
        self._limits: dict[str, int | None] = {}
        self._final_count = 0
        self._pending_task_update: dict[str, TaskUpdate] = {}
        self._groups: dict[str, tuple[int, int]] = {}
        self._group_flush: asyncio.TimerHandle | None = None
        self.owner = Owner.current().token
        """This process's claim on the run (`Storage.claim_run`), held while `run` executes it."""
        self._stop_signal: int | None = None
        """Set by the first SIGINT/SIGTERM/SIGHUP: end local trees, leave the run resumable."""
        self._stop_now = False
        """Set by a second signal: SIGKILL what is left and leave the loop at once."""
        self.shared = shared
        """Slots shared with the other runs of this process (`ork scheduler`), if any."""
        self.queue_tracker = queue_tracker
        """The tracker of queued tasks shared with the other runs of this process, if any."""
        self._abandoned = False
        """Set by `abandon`: the claim was lost, so nothing more is written for this run."""
        self.fenced = False
        """Write every step fenced by this process's claim (`Storage.write`'s `owner`): set by
        `ork scheduler`, whose lease-held claims can end unawares. An `ork run` claim ends only
        by ``ork resume --force``, so it skips the check each commit would pay (≈ 0.05 ms a task
        on SQLite)."""
        self.abandon_reason: str | None = None
        """Why, when this scheduler found out itself (a fenced write refused), not its caller."""

    # -- state changes (buffered, committed by _commit) ----------------------------------

    def _set(self, st: TaskState, status: str, *, attempt_row: str | None = None, **fields: Any) -> None:
        previous = st.status
        st.status = status
        self._final_count += (status in FINAL) - (previous in FINAL)
        fields["status"] = status
        if fields.get("error") is not None and len(fields["error"]) > MAX_ERROR:
            fields["error"] = cap_line(fields["error"], MAX_ERROR)
        pending = self._pending_task_update.get(st.spec.name)
        if pending is not None and pending.attempt_row is None:
            # e.g. queued then running in one batch: one UPDATE, then the attempt row
            pending.fields.update(fields)
            pending.attempt_row = attempt_row
            pending.attempt = st.attempt
        else:
            update = TaskUpdate(self.run_id, st.spec.name, fields, attempt_row, st.attempt)
            self._updates.append(update)
            self._pending_task_update[st.spec.name] = update
        self._notices.append((st.spec.name, status, previous, st.attempt, fields.get("error")))

    def _commit(self) -> None:
        logs, metrics = self.sink.take()
        if self._abandoned:  # the run is another process's: what this one still thinks is not written
            self._updates, self._notices = [], []
            self._pending_task_update.clear()
            return
        if self._updates or logs or metrics:
            try:
                self.storage.write(self._updates, mask_batch(self._updates, logs), metrics,
                                   owner=self.owner if self.fenced else None)
            except RunClaimedError as exc:  # taken over (an ended lease, `ork resume --force`): fenced off
                self.abandon(str(exc))
                self._updates, self._notices = [], []
                self._pending_task_update.clear()
                return
            self._updates = []
            self._pending_task_update.clear()
        notices, self._notices = self._notices, []
        watch = self.hooks.watches_status
        for name, status, previous, attempt, error in notices:
            self.reporter.task_changed(name, status, attempt, error)
            if watch:
                self.hooks.task_status_changed(
                    run_id=self.run_id,
                    workflow_name=self.workflow.name,
                    task_name=name,
                    attempt=attempt,
                    status=status,
                    previous=previous,
                    error=mask(error) if error is not None else None,  # hooks notify others: no secrets
                )

    def _sink_write_failed(self) -> None:
        """From any thread: wake the loop, whose next commit writes the buffered lines or stops the run."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing is left to stop
            self._loop.call_soon_threadsafe(self._post, "flush", None)

    # -- readiness -------------------------------------------------------------------------

    def _limit_for(self, executor: str) -> int | None:
        if executor not in self._limits:
            try:
                self._limits[executor] = self.executors.resolved(executor).max_concurrency
            except OrkError:
                self._limits[executor] = None
        return self._limits[executor]

    def _enqueue(self, st: TaskState) -> None:
        self._set(st, "queued")
        self._ready.setdefault(st.spec.executor, deque()).append(st.spec.name)

    def _settle_dependent(self, name: str) -> None:
        """All dependencies of `name` are final: queue it, or mark it upstream_failed / skipped."""
        st = self.tasks[name]
        if st.status != "pending":
            return
        dep_states = [self.tasks[d].status for d in st.spec.depends_on]
        if self._cancelling:
            self._finish(st, "cancelled", error="run cancelled")
        elif st.spec.on_failure_run or all(s == "success" for s in dep_states):
            self._enqueue(st)
        elif any(s in BAD for s in dep_states):
            failed = [d for d in st.spec.depends_on if self.tasks[d].status in BAD]
            self._finish(st, "upstream_failed", error=f"upstream task(s) did not succeed: {', '.join(failed)}")
        else:
            self._finish(st, "skipped", error=None)

    def _finish(
        self, st: TaskState, status: str, *, error: str | None = None, output: Any = None, encoded: JSONText | None = None,
        **fields: Any,
    ) -> None:
        now = time.time()
        if status == "success":
            self.outputs[st.spec.name] = output
            fields["output"] = output if encoded is None else encoded
        # The final attempt stays in the task's own row; only superseded attempts (retried,
        # or cut short by a crash) get a row in the history table. One INSERT less per task.
        if st.status == "running":
            fields["pgid"] = None  # its process group is gone (cleared here, not by a commit of its own)
        self._set(st, status, error=error, finished_at=now, **fields)
        st.error = error
        for dependent in st.spec.dependents:
            dst = self.tasks[dependent]
            dst.remaining -= 1
            if dst.remaining == 0:
                self._settle_dependent(dependent)

    def _dispatch(self) -> None:
        """Move queued tasks to running while there is capacity overall and per executor."""
        if self._cancelling or self._stop_signal is not None:
            return
        progressed = True
        shared = self.shared
        while progressed and self._running < self.limit:
            progressed = False
            for executor, queue in self._ready.items():
                if not queue or self._running >= self.limit:
                    continue
                if shared is not None and not shared.free():
                    shared.wait(id(self), functools.partial(self._post, "wake", None))
                    return
                cap = self._limit_for(executor)
                if cap is not None and self._running_per_executor.get(executor, 0) >= cap:
                    continue
                st = self.tasks[queue.popleft()]
                self._start_attempt(st)
                progressed = True

    def _start_attempt(self, st: TaskState) -> None:
        now = time.time()
        st.attempt += 1
        if not st.resume_adopt:
            st.try_number += 1
        st.idempotency_key = make_idempotency_key(self.run_id, st.spec.name, st.try_number)
        st.started_at = now
        self._running += 1
        self._running_per_executor[st.spec.executor] = self._running_per_executor.get(st.spec.executor, 0) + 1
        if self.shared is not None:
            self.shared.take()
        self._set(
            st,
            "running",
            attempt=st.attempt,
            try_number=st.try_number,
            started_at=now,
            finished_at=None,
            error=None,
            idempotency_key=st.idempotency_key,
            next_try_at=None,
            pgid=None,
        )
        self._to_start.append(st)

    @staticmethod
    def _attempt_fields(st: TaskState) -> dict[str, Any]:
        return {"try_number": st.try_number, "started_at": st.started_at}

    def _release(self, st: TaskState) -> None:
        self._running -= 1
        self._running_per_executor[st.spec.executor] -= 1
        if self.shared is not None:
            self.shared.give()

    # -- events ----------------------------------------------------------------------------

    def _post(self, kind: str, payload: Any) -> None:
        assert self._events is not None
        self._events.put_nowait((kind, payload))

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "done":
            name, attempt, outcome = payload
            st = self.tasks[name]
            if st.attempt != attempt or st.status != "running" or st.runner is None:
                return
            st.runner = None
            self._release(st)
            if outcome.status != STOPPED:  # a stopped attempt stays `running`: `ork resume` adopts or reruns it
                self._apply_outcome(st, outcome)
        elif kind == "retry":
            st = self.tasks[payload]
            if st.status == "retrying":
                self._retrying -= 1
                self._enqueue(st)
        elif kind == "job":
            self._job_event(payload)
        elif kind == "cancel":
            self._cancel_all()
        elif kind == "stop":
            self._stop_all(payload)
        elif kind == "groups":
            self._commit_groups()
        # "flush", "wake": nothing to do here; the loop's next pass commits and dispatches

    def _apply_outcome(self, st: TaskState, outcome: Outcome) -> None:
        if outcome.status == "success":
            self._finish(st, "success", output=outcome.output, encoded=outcome.encoded)
        elif outcome.status == "deferred":
            d = outcome.deferred
            assert d is not None
            st.handle = (d.tracker, d.handle)
            self._set(
                st,
                "deferred",
                tracker=d.tracker,
                handle=d.handle,
                link=d.link,
                external_id=d.external_id,
                deferred_at=time.time(),
                poll_failures=0,
                last_poll_error=None,
            )
            self._to_track.append(st)
            if self._cancelling:  # run() returned after the user cancelled: cancel the job it started
                self._cancel_deferred.append(st)
        elif outcome.status == "skipped":
            self._finish(st, "skipped", error=outcome.error)
        elif outcome.status == "cancelled" or self._cancelling:
            self._finish(st, "cancelled", error=outcome.error or "cancelled")
        else:
            self._fail_or_retry(st, outcome.error or "failed", uncertain=outcome.uncertain)

    def _fail_or_retry(self, st: TaskState, error: str, *, uncertain: bool = False) -> None:
        """Retry while `retries` last, else fail; an uncertain kickoff's retry repeats its try.

        Such a retry spends one of `retries` (`uncertain_retries`) but keeps the try number,
        so the idempotency key, and adopts first; both are committed with the `retrying` state
        so `ork resume` after a crash does the same.
        """
        spec = st.spec
        if st.try_number + st.uncertain_retries <= spec.retries and not self._cancelling:
            delay = spec.retry_delay_after(st.try_number)
            due = time.time() + delay
            if uncertain:
                st.uncertain_retries += 1
                error += f" (kickoff uncertain: the retry looks the job up first, same idempotency key {st.idempotency_key})"
            self._set(
                st, "retrying", attempt_row="end", error=error, finished_at=time.time(), next_try_at=due,
                uncertain_retries=st.uncertain_retries, adopt_first=uncertain,
                **self._attempt_fields(st),
            )
            st.resume_adopt = uncertain
            self._retrying += 1
            assert self._events is not None
            loop = asyncio.get_running_loop()
            handle = loop.call_later(delay, self._post, "retry", spec.name)
            self._timers.add(handle)
        else:
            self._finish(st, "failed", error=error)

    def _job_event(self, event: JobEvent) -> None:
        st = self.tasks.get(event.task)
        if st is None or st.status != "deferred" or st.attempt != event.attempt:
            return
        if event.status is not None and event.status.log:
            logger = TaskLogger(self.sink, self.run_id, st.spec.name, st.attempt)
            for line in event.status.log:
                logger.line("job", line)
        if event.kind == "log":
            return
        if event.kind == "poll":
            self._updates.append(
                TaskUpdate(
                    self.run_id,
                    st.spec.name,
                    {"last_poll_at": event.polled_at, "last_poll_error": event.error, "poll_failures": event.failures},
                )
            )
            return
        st.handle = None
        if event.kind == "timeout":
            cancelled = f"; {event.error}" if event.error else " (the external job was cancelled)"
            self._fail_or_retry(st, f"timed out after {st.spec.timeout:g}s{cancelled}")
            return
        status = event.status
        assert status is not None
        if status.metrics:
            recorder = Metrics(self.sink, self.run_id, st.spec.name, st.attempt)
            for name, value, labels in status.metrics:
                recorder.record(name, value, labels)
        if status.state is JobState.SUCCEEDED:
            try:
                output = to_output(status.output, self._output_model(st))
                encoded = encode_output(output, self.max_output_bytes)
            except TaskError as exc:
                self._fail_or_retry(st, str(exc))
                return
            self._finish(st, "success", output=output, encoded=encoded, last_poll_at=event.polled_at)
        else:
            self._fail_or_retry(st, status.error or "the external job failed")

    def _output_model(self, st: TaskState) -> type[BaseModel] | None:
        try:
            return self.executors.resolved(st.spec.executor).spec.output_model
        except OrkError:
            return None

    # -- process groups ---------------------------------------------------------------------

    def _record_group(self, name: str, attempt: int, pgid: int | None) -> None:
        """An executor started (or saw the end of) the process group of a task's attempt."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:  # an executor's worker thread, or a loop of its own
            self._loop.call_soon_threadsafe(self._record_group, name, attempt, pgid)
            return
        if pgid is None:
            self._groups.pop(name, None)
            return
        self._groups[name] = (attempt, pgid)
        if self._group_flush is None:
            self._group_flush = self._loop.call_later(GROUP_COMMIT_DELAY, self._flush_groups)

    def _flush_groups(self) -> None:
        self._group_flush = None
        self._post("groups", None)  # committed by the loop, with whatever else that step writes

    def _commit_groups(self) -> None:
        groups, self._groups = self._groups, {}
        for name, (attempt, pgid) in groups.items():
            st = self.tasks[name]
            if st.status == "running" and st.attempt == attempt:
                self._updates.append(TaskUpdate(self.run_id, name, {"pgid": pgid}))

    # -- running one attempt -----------------------------------------------------------------

    def _context(self, st: TaskState) -> Context:
        ctx = task_context(
            spec=st.spec, workflow=self.workflow, project=self.project, run_id=self.run_id, attempt=st.attempt,
            try_number=st.try_number, idempotency_key=st.idempotency_key or "", params=self.params, sink=self.sink,
            record_process_group=functools.partial(self._record_group, st.spec.name, st.attempt),
        )
        ctx.trigger, ctx.logical_date, ctx.interval_start, ctx.interval_end = self._run_context()
        return ctx

    def _run_context(self) -> tuple[str, str, str | None, str | None]:
        """The run's trigger, logical date and interval, for every task's context.

        A run with no tick (``ork run``) has its creation time as logical date and no
        interval, as Airflow's manual runs; read from storage once, so a resumed run keeps it.
        """
        if self._run_fields is None:
            origin = self.origin
            logical_date = origin.logical_date
            if logical_date is None:
                logical_date = utc_iso(self.storage.get_run(self.run_id).created_at)
            self._run_fields = (origin.trigger, logical_date, origin.interval_start, origin.interval_end)
        return self._run_fields

    async def _execute(self, st: TaskState) -> None:
        spec = st.spec
        attempt = st.attempt
        ctx = self._context(st)
        st.ctx = ctx
        executor: object | None = None
        deadline: asyncio.Timeout | None = None
        try:
            executor = await self.executors.get(spec.executor)
            upstream = {d: self.outputs[d] for d in spec.depends_on if d in self.outputs}
            call = self._call(executor, ctx, spec, upstream, adopt=st.resume_adopt)
            st.resume_adopt = False
            remaining = None
            if spec.timeout is not None:
                remaining = max(0.001, spec.timeout - (time.time() - (st.started_at or time.time())))
            deadline = asyncio.timeout(remaining)
            async with deadline:
                result = await call
            if isinstance(result, Deferred):
                outcome = Outcome("deferred", deferred=result)
            else:
                output = to_output(result, self.executors.resolved(spec.executor).spec.output_model)
                outcome = Outcome("success", output=output, encoded=encode_output(output, self.max_output_bytes))
        except asyncio.CancelledError:
            ctx.cancel_event.set()
            if self._stop_signal is not None:
                # ork is stopping, not the user cancelling: local trees end with the cancellation
                # (and `_end_local_trees` confirms it); remote work is left for `ork resume` to adopt
                outcome = Outcome(STOPPED)
            else:
                await self._cancel_executor(executor, ctx)
                outcome = Outcome("cancelled", error="cancelled")
            self._post("done", (spec.name, attempt, outcome))
            raise
        except Exception as exc:
            # Only the deadline's own expiry is the task's timeout: a TimeoutError raised by the
            # task's code (a socket timeout, say) is an ordinary failure.
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                ctx.cancel_event.set()
                await self._cancel_executor(executor, ctx)
                outcome = Outcome("failed", error=f"timed out after {spec.timeout:g}s", timed_out=True)
            else:
                outcome = self._failure(exc, ctx)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt … raised by the task: its failure
            ctx.log.error("%s", task_traceback(exc))
            outcome = Outcome("failed", error=task_raised(exc))
        self._post("done", (spec.name, attempt, outcome))

    def _queue_of(self, spec: CompiledTask) -> str | None:
        if spec.queue is not None:
            return spec.queue
        entry = self.project.settings.executors.get(spec.executor)
        return entry.queue if entry is not None else None

    def _start_runners(self) -> None:
        """Start the attempts `_dispatch` chose: a coroutine each, or for those with a queue, one enqueue for all."""
        if self._abandoned:  # the commit that made them was fenced off
            self._drop_unstarted()
            return
        queued: list[tuple[TaskState, str]] = []
        for st in self._to_start:
            queue = self._queue_of(st.spec)
            if queue is not None:
                queued.append((st, queue))
                continue
            st.runner = asyncio.create_task(self._execute(st), name=f"ork-task-{st.spec.name}")
            st.runner.add_done_callback(functools.partial(self._runner_done, st.spec.name, st.attempt))
        self._to_start = []
        if queued:
            for (st, _), outcome in zip(queued, self._enqueue_work(queued)):
                self._release(st)
                self._apply_outcome(st, outcome)
            self._commit()  # the deferrals' handles are committed before they are tracked
            if self._abandoned:
                self._drop_unstarted()
            self._redispatch = True  # their slots are free again, and no event will say so

    def _enqueue_work(self, attempts: list[tuple[TaskState, str]]) -> list[Outcome]:
        """Hand attempts to the workers of their queues: deferrals whose tracker reads storage (`ork_core.workqueue`).

        Their `running` state, with the idempotency key each item is keyed by, is committed
        first: a scheduler killed between the two finds the same items when it resumes.
        """
        items = [NewWork(self.run_id, st.spec.name, st.attempt, queue,
                         st.idempotency_key or f"{self.run_id}/{st.spec.name}/{st.try_number}", self._work_payload(st))
                 for st, queue in attempts]
        try:
            deferreds = workqueue.enqueue(self.storage, items)
        except (OrkError, NotImplementedError) as exc:
            return [Outcome("failed", error=f"cannot queue the task on {queue!r}: {exc}") for _, queue in attempts]
        return [Outcome("deferred", deferred=d) for d in deferreds]

    def _work_payload(self, st: TaskState) -> dict[str, Any]:
        """What a worker needs to run the attempt without this scheduler."""
        spec = st.spec
        trigger, logical_date, interval_start, interval_end = self._run_context()
        payload = {
            "workflow_hash": self.workflow.hash,
            "workflow": self.workflow.name,
            "task": spec.name,
            "try_number": st.try_number,
            "idempotency_key": st.idempotency_key,
            "adopt": st.resume_adopt,
            "params": self.params,
            "upstream": {d: self.outputs[d] for d in spec.depends_on if d in self.outputs},
            "origin": {"trigger": trigger, "logical_date": logical_date,
                       "interval_start": interval_start, "interval_end": interval_end},
            "started_at": st.started_at,
        }
        st.resume_adopt = False
        return payload

    def _drop_unstarted(self) -> None:
        """A commit was fenced off: the attempts it would start, the jobs it would track or cancel, are not this process's.

        The new owner read the run without them and starts them itself; started here as well,
        a task would run twice (enqueued work is keyed by its try, but a local task is not).
        """
        for st in self._to_start:
            self._release(st)
        self._to_start = []
        self._to_track = []
        self._cancel_deferred.clear()

    def _runner_done(self, name: str, attempt: int, runner: asyncio.Task[None]) -> None:
        """A safety net: an attempt whose coroutine died without reporting must not hang the run."""
        if runner.cancelled():
            if self._stop_signal is not None:  # cancelled before it ran a step: it posted nothing
                self._post("done", (name, attempt, Outcome(STOPPED)))
            return
        if runner.exception() is None:
            return
        exc = runner.exception()
        self._post("done", (name, attempt, Outcome("failed", error=f"internal error in ork: {type(exc).__name__}: {exc}")))

    @staticmethod
    def _failure(exc: Exception, ctx: Context) -> Outcome:
        if isinstance(exc, TaskSkipped):
            return Outcome("skipped", error=str(exc) or None)
        if isinstance(exc, KickoffUncertain):
            return Outcome("failed", error=str(exc), uncertain=True)
        if isinstance(exc, OrkError):  # TaskError and ork's own errors: the message is the point
            return Outcome("failed", error=str(exc))
        ctx.log.error("%s", task_traceback(exc))
        return Outcome("failed", error=f"{type(exc).__name__}: {exc}")

    async def _call(self, executor: object, ctx: Context, spec: CompiledTask, upstream: dict[str, Any], *, adopt: bool) -> Any:
        assert self._pool is not None
        return await call_executor(self.executors, self.hooks, self._pool, executor, ctx, spec, upstream, adopt=adopt)

    async def _maybe_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        assert self._pool is not None
        return await maybe_thread(self._pool, func, *args)

    async def _cancel_executor(self, executor: object | None, ctx: Context) -> None:
        cancel = getattr(executor, "cancel", None) if executor is not None else None
        if not callable(cancel):
            return
        try:
            await asyncio.wait_for(self._maybe_thread(cancel, ctx), timeout=self.kill_grace + 10)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a SystemExit from an executor's cancel() must not end ork either
            ctx.log.warning("cancel() failed: %s: %s", type(exc).__name__, exc)

    # -- cancellation ---------------------------------------------------------------------------

    def request_cancel(self) -> None:
        """Thread- and signal-safe: ask the loop to cancel the run."""
        if self._events is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._post, "cancel", None)

    def request_stop(self, signum: int) -> None:
        """Signal-safe: stop ork, leaving the run resumable (SIGINT, SIGTERM, SIGHUP).

        Unlike a cancel, nothing is recorded as final and deferred external jobs are left
        running (a restart must not cancel a BigQuery job); the local process trees of
        running tasks are ended. A second call stops faster: SIGKILL, no waiting.
        """
        if self._events is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._post, "stop", signum)

    def abandon(self, reason: str | None = None) -> None:
        """Stop at once without writing anything more: another process has taken the run over.

        `ork scheduler` calls this when its lease on the run was not renewed in time (it was
        paused, or cut off from the database, for longer than the lease) and another
        scheduler adopted the run: that one now writes its state, so this one must not, not
        even the ``stopped`` a stop writes. Local process trees are ended, as on a stop, so a
        task does not run twice at once; deferred external jobs are left to the new owner.
        """
        if self._abandoned:
            return
        self._abandoned = True
        self.abandon_reason = reason
        self.sink.mute()
        self.request_stop(signal.SIGTERM)

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def _stop_all(self, signum: int) -> None:
        if self._stop_signal is not None:
            self._stop_now = True
            self._kill_local_trees()
            return
        self._stop_signal = signum
        for handle in self._timers:
            handle.cancel()  # a retrying task stays `retrying`: `ork resume` schedules it
        for st in self.tasks.values():
            if st.status == "running" and st.runner is not None:
                if st.ctx is not None:
                    st.ctx.cancel_event.set()
                st.runner.cancel()
        for q in self._ready.values():
            q.clear()

    def _kill_local_trees(self) -> None:
        """SIGKILL every process that carries this run's id (the second signal: no grace)."""
        for _, pgid in (run_processes(self.run_id) or {}).values():
            signal_group(pgid, signal.SIGKILL)

    async def _end_local_trees(self) -> bool:
        """Wait until no process of this run is left (through /proc); SIGKILL after the grace.

        The trees end with their tasks' cancellation; this is the confirmation, and it also
        covers an `isolation: process` child whose ending runs on after its task reported.
        """
        delay = 0.01
        for grace in (0.0 if self._stop_now else self.kill_grace, KILL_WAIT):
            deadline = time.monotonic() + grace
            while True:
                marked = run_processes(self.run_id)
                if not marked:
                    return True
                if time.monotonic() >= deadline or self._stop_now:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
            for _, pgid in marked.values():
                signal_group(pgid, signal.SIGKILL)
        return not run_processes(self.run_id)

    def _cancel_all(self) -> None:
        if self._cancelling:
            return
        self._cancelling = True
        for handle in self._timers:
            handle.cancel()
        for st in self.tasks.values():
            if st.status == "running" and st.runner is not None:
                st.runner.cancel()
            elif st.status in ("pending", "queued", "retrying"):
                if st.status == "retrying":
                    self._retrying -= 1
                self._finish(st, "cancelled", error="run cancelled")
            elif st.status == "deferred":
                self._cancel_deferred.append(st)
        for q in self._ready.values():
            q.clear()

    # -- the loop ---------------------------------------------------------------------------------

    def _done(self) -> bool:
        return self._final_count == len(self.tasks)

    def _final_status(self) -> str:
        statuses = {st.status for st in self.tasks.values()}
        if self._cancelling or "cancelled" in statuses:
            return "cancelled"
        if statuses & {"failed", "upstream_failed"}:
            return "failed"
        return "success"

    async def run(self, *, resumed: bool = False) -> RunResult:
        """Execute the run to a final status, holding its claim for exactly that long.

        The claim is taken here unless `ork run`/`resume_scheduler` took it already, and
        released however this ends (success, failure, an error, a stop), so that only a
        process killed outright leaves a run owned, by a dead owner that resume can take.
        """
        found = self.storage.claim_run(self.run_id, self.owner, expected=None)
        if found != self.owner:
            raise _claimed(self.run_id, found, first=False)
        try:
            return await self._run(resumed=resumed)
        except StorageWriteError as exc:
            exc.run_id = self.run_id  # nothing after the failed write was acted on: resumable
            raise
        finally:
            if self.shared is not None:  # what a stop left running is not this run's any more
                self.shared.forget(id(self))
                for _ in range(self._running):
                    self.shared.give()
                self._running = 0
            if not self._abandoned:  # (the release of a lost claim would be a no-op anyway)
                with contextlib.suppress(OrkError):  # never hide how the run ended; a dead owner is claimable
                    self.storage.release_run(self.run_id, self.owner)

    async def _run(self, *, resumed: bool) -> RunResult:
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._cancel_deferred: list[TaskState] = []
        self._pool = DaemonPool()
        self._triggerer = Triggerer(
            self.plugins.registry,
            self.executors,
            lambda event: self._post("job", event),
            poll_interval=self._poll_interval,
            builtin={workqueue.TRACKER: self.queue_tracker or workqueue.QueueTracker(self.storage)},
        )
        sweep_scratch(self.project.dir)  # what killed ork processes left in .ork/tmp
        now = time.time()
        self._updates.append(RunUpdate(self.run_id, {"status": "running", "started_at": now, "pid": os.getpid(), "finished_at": None}))
        self.reporter.run_started(self.run_id, self.workflow, resumed)
        self.hooks.run_started(run_id=self.run_id, workflow_name=self.workflow.name, params=self.params, resumed=resumed)
        errors: list[str] = []
        try:
            self._prime()
            while True:
                self._dispatch()
                self._commit()
                self._start_runners()
                for st in self._to_track:
                    assert st.handle is not None
                    deadline = (st.started_at + st.spec.timeout) if st.spec.timeout and st.started_at else None
                    await self._triggerer.add(
                        TrackedJob(self.run_id, st.spec.name, st.attempt, st.spec.executor, st.handle[0], st.handle[1], deadline)
                    )
                self._to_track = []
                if self._cancel_deferred:
                    pending, self._cancel_deferred = self._cancel_deferred, []
                    cancel_errors = await asyncio.gather(*(self._triggerer.cancel(st.spec.name) for st in pending))
                    for st, error in zip(pending, cancel_errors):
                        self._finish(st, "cancelled", error=error or "run cancelled (the external job was cancelled)")
                    continue
                if self._done() or self._stop_now or (self._stop_signal is not None and self._running == 0):
                    break
                if self._redispatch:  # dispatch again, after letting the other runs of this process move
                    self._redispatch = False
                    await asyncio.sleep(0)
                else:
                    kind, payload = await self._events.get()
                    self._handle(kind, payload)
                while not self._events.empty():
                    kind, payload = self._events.get_nowait()
                    self._handle(kind, payload)
            if self._stop_signal is not None and not self._done():  # (the last task may have ended meanwhile)
                status = STOPPED
                if not await self._end_local_trees():
                    errors.append("some processes of this run's tasks could not be ended; see `ps e | grep ORK_RUN_ID`")
            else:
                status = self._final_status()
        except BaseException:
            # an unexpected error in the loop itself: leave the run resumable, do not mark it final
            with contextlib.suppress(Exception):
                self._commit()
            raise
        finally:
            if self._group_flush is not None:
                self._group_flush.cancel()
            await self._triggerer.close()
            errors += await self.executors.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._abandoned:  # neither a status nor a hook: the run goes on in the process that took it
            return RunResult(self.run_id, STOPPED, errors, signal=self._stop_signal)
        if status == STOPPED:  # not final: no finished_at, no ork_run_finished; `ork resume` continues it
            self._updates.append(RunUpdate(self.run_id, {"status": STOPPED}))
            self._commit()
            if self._abandoned:  # that commit was fenced off
                return RunResult(self.run_id, STOPPED, errors, signal=self._stop_signal)
            self.reporter.run_finished(self.run_id, status)
            return RunResult(self.run_id, status, errors, signal=self._stop_signal)
        self._updates.append(RunUpdate(self.run_id, {"status": status, "finished_at": time.time()}))
        self._commit()
        if self._abandoned:  # that commit was fenced off: the run is not over, it is another's
            return RunResult(self.run_id, STOPPED, errors)
        self.reporter.run_finished(self.run_id, status)
        self.hooks.run_finished(run_id=self.run_id, workflow_name=self.workflow.name, status=status)
        return RunResult(self.run_id, status, errors)

    def _prime(self) -> None:
        """Set up remaining-dependency counts and queue whatever can start now."""
        self._final_count = sum(1 for st in self.tasks.values() if st.status in FINAL)
        for executor in dict.fromkeys(st.spec.executor for st in self.tasks.values() if st.status not in FINAL):
            # resolved (imported) now, before any deadline runs, not on the loop when a task is
            # first queued: `ork resume` compiles nothing, so nothing resolved them yet
            self._limit_for(executor)
        for st in self.tasks.values():
            st.remaining = sum(1 for d in st.spec.depends_on if self.tasks[d].status not in FINAL)
        now = time.time()
        for st in self.tasks.values():
            if st.status == "deferred" and st.handle is not None:
                self._to_track.append(st)
            elif st.status == "retrying" and st.next_try_at is not None and st.next_try_at > now:
                # resumed in its retry delay: wait for the rest of it, as the killed ork would have
                self._retrying += 1
                handle = asyncio.get_running_loop().call_later(st.next_try_at - now, self._post, "retry", st.spec.name)
                self._timers.add(handle)
            elif st.status in ("queued", "running", "retrying"):
                st.status = "pending"  # re-queued below; the attempt it had is over
                self._enqueue(st)
            elif st.status == "pending" and st.remaining == 0:
                if st.spec.depends_on:
                    self._settle_dependent(st.spec.name)
                else:
                    self._enqueue(st)

    def load_state(self, storage_tasks: Mapping[str, Any]) -> None:
        """Adopt what storage says about each task (for `ork resume`)."""
        recorded: dict[str, int] = {}
        for name, rec in storage_tasks.items():
            st = self.tasks.get(name)
            if st is None:
                continue
            st.status = rec.status
            st.attempt = rec.attempt
            st.try_number = rec.try_number
            st.started_at = rec.started_at
            st.idempotency_key = rec.idempotency_key
            st.uncertain_retries = rec.uncertain_retries
            if rec.status == "success":
                self.outputs[name] = rec.output
            elif rec.status == "deferred" and rec.tracker and rec.handle is not None:
                st.handle = (rec.tracker, rec.handle)
            elif rec.status == "running":
                # the attempt died with ork: same try, so the same idempotency key, and adopt first
                st.resume_adopt = True
                self._updates.append(
                    TaskUpdate(
                        self.run_id, name,
                        {"status": "failed", "error": "ork stopped while this attempt was running",
                         "finished_at": time.time(), **self._attempt_fields(st)},
                        "end", st.attempt,
                    )
                )
                if rec.pgid:
                    recorded[name] = rec.pgid
            elif rec.status == "retrying":
                st.next_try_at = rec.next_try_at
                st.resume_adopt = rec.adopt_first  # after an uncertain kickoff: same key, adopt first
        if recorded or any(rec.status == "running" for rec in storage_tasks.values()):
            self._end_leftovers(recorded)

    def _end_leftovers(self, recorded: Mapping[str, int]) -> None:
        """End what the tasks of the killed ork left running, before anything starts again.

        The processes that carry this run's id in their environment are its leftovers, those
        whose group id was committed and those started too shortly before the kill to have
        it committed. A recorded group is ended only if one of its members carries the id,
        so a group id that was reused by an unrelated process is left alone.
        """
        marked = run_processes(self.run_id)
        if marked is None:  # no /proc: the recorded groups are all there is to go by
            groups = set(recorded.values())
        else:
            groups = {pgid for _, pgid in marked.values()}
            groups |= {pgid for pgid in recorded.values() if any(pid in marked for pid in group_members(pgid))}
        for pgid in sorted(groups):
            end_group(pgid, grace=self.kill_grace)


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
"""Signals that stop ork and leave the run resumable (`Scheduler.request_stop`)."""


class _Stoppable(Protocol):
    def request_stop(self, signum: int) -> None: ...


def _install_signal_handlers(loop: asyncio.AbstractEventLoop, scheduler: _Stoppable) -> Callable[[], None]:
    """SIGINT, SIGTERM and SIGHUP stop the run, resumable; a second one stops faster.

    The handlers only post an event to the loop, so the stop goes through `Scheduler.run`'s
    normal end (state committed, executors closed, the run's claim released).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, scheduler.request_stop, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed[sig] = previous

    def remove() -> None:
        for sig, previous in installed.items():
            loop.remove_signal_handler(sig)
            if previous is not None:  # asyncio would leave the default action, not the caller's handler
                signal.signal(sig, previous)

    return remove


def create_run(
    storage: Storage, workflow: CompiledWorkflow, params: dict[str, Any], run_id: str | None = None,
    *, claim: bool = False, origin: RunOrigin | None = None, queued: bool = False,
) -> str:
    """Store a new run; `claim` makes this process its owner from the first moment (`ork run`).

    `queued` leaves it for `ork scheduler` to start. A run for a tick goes through
    `create_tick_run`, which may find the tick taken.
    """
    run_id = create_tick_run(storage, workflow, params, run_id, claim=claim, origin=origin, queued=queued)
    if run_id is None:
        raise StorageError(f"the tick {origin} of {workflow.name} has a run already")
    return run_id


def create_tick_run(
    storage: Storage, workflow: CompiledWorkflow, params: dict[str, Any], run_id: str | None = None,
    *, claim: bool = False, origin: RunOrigin | None = None, queued: bool = False, snapshot_saved: bool = False,
) -> str | None:
    """`create_run`, or None when storage's unique key finds a run for `origin`'s tick already.

    `snapshot_saved`: this process stored the workflow's snapshot already (`ork scheduler`,
    which creates many runs of one version), so that write is skipped.
    """
    run_id = run_id or new_run_id()
    if not snapshot_saved:
        storage.save_workflow(workflow.hash, workflow.name, workflow.file, workflow.source, workflow.to_json())
    created = storage.create_run(
        run_id, workflow.hash, workflow.name, workflow.file, params,
        [(n, t.executor) for n, t in workflow.tasks.items()], time.time(),
        owner=Owner.current().token if claim else None, origin=origin, status=QUEUED if queued else "pending",
    )
    return run_id if created else None


def execute(scheduler: Scheduler, *, resumed: bool = False, handle_signals: bool = True) -> RunResult:
    """Run the scheduler's loop to the end in a fresh event loop."""

    async def main() -> RunResult:
        remove = _install_signal_handlers(asyncio.get_running_loop(), scheduler) if handle_signals else (lambda: None)
        try:
            return await scheduler.run(resumed=resumed)
        finally:
            remove()

    return asyncio.run(main())


def resume_scheduler(
    *, project: Project, plugins: Plugins, storage: Storage, run_id: str, reporter: Reporter | None = None,
    max_concurrency: int | None = None, poll_interval: float | None = None, force: bool = False,
    shared: SharedSlots | None = None, queue_tracker: workqueue.QueueTracker | None = None,
    lease: float | None = None,
) -> Scheduler:
    """A scheduler that continues `run_id` from its stored state and workflow snapshot.

    `lease`: claim it leased for that many seconds (`ork scheduler`), not for as long as this
    process lives (`ork resume`).
    """
    from ork_core.workflow import CompiledWorkflow

    record = storage.get_run(run_id)
    if record.status in ("success", "failed", "cancelled"):
        raise OrkError(f"run {run_id} already finished ({record.status}); nothing to resume")
    # Claimed before anything else: the run is read again, and leftovers are ended, only by
    # the winner. Should this fail later on, the claim stays with this process: it can
    # resume again, and once it exits the dead owner is claimable.
    owner = _claim_for_resume(storage, record, force=force, lease=lease)
    record = storage.get_run(run_id)  # as left by whoever held it before the claim
    if record.status in ("success", "failed", "cancelled"):
        storage.release_run(run_id, owner)
        raise OrkError(f"run {run_id} already finished ({record.status}); nothing to resume")
    data, source = storage.load_workflow(record.workflow_hash)
    workflow = CompiledWorkflow.from_json(data, record.workflow_hash, source)
    scheduler = Scheduler(
        project=project, plugins=plugins, storage=storage, workflow=workflow, run_id=run_id,
        params=record.params, reporter=reporter, max_concurrency=max_concurrency, poll_interval=poll_interval,
        origin=record.origin,
        shared=shared, queue_tracker=queue_tracker,
    )
    scheduler.load_state(record.tasks)
    return scheduler


def _claim_for_resume(storage: Storage, record: Any, *, force: bool, lease: float | None = None) -> str:
    """Claim the run for this process before anything else happens to it, or refuse.

    A run nobody holds, or held by a dead process, is taken by a compare-and-set from the
    owner just read: of several resumes racing for it, exactly one wins. `force` takes it
    from an owner that seems alive too.
    """
    me = Owner.current().token
    current = record.owner
    if current is not None and current != me and not force and Owner.parse(current).alive():
        raise _claimed(record.id, current, first=True)
    found = storage.claim_run(record.id, me, expected=current, lease=lease)
    if found != me:
        raise _claimed(record.id, found, first=False)
    return me


def _claimed(run_id: str, owner: str | None, *, first: bool) -> RunClaimedError:
    if owner is None:
        message = f"run {run_id} was taken and released by another process while this one was starting; try again"
    elif first:
        message = (
            f"run {run_id} is still being executed by {Owner.parse(owner).describe()}; stop it first, "
            "or pass --force if that process is not ork"
        )
    elif not Owner.parse(owner).alive():  # Scheduler.run on a run whose process was killed
        message = f"run {run_id} is held by {Owner.parse(owner).describe()}, which is gone; `ork resume {run_id}` takes it over"
    else:
        message = f"run {run_id} is being executed by {Owner.parse(owner).describe()}, which claimed it first"
    return RunClaimedError(message, run_id=run_id, owner=owner)


__all__ = ["STOPPED", "Reporter", "RunResult", "Scheduler", "StorageError", "coerce_params", "create_run", "create_tick_run", "execute", "resume_scheduler"]
