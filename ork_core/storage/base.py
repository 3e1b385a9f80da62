"""The storage contract the scheduler writes through, whatever the database.

The scheduler never issues SQL: it hands a batch of `TaskUpdate`/`RunUpdate` records (and the
log lines and metrics gathered since the last batch) to `Storage.write`, which must apply
them in one transaction. That is what makes "committed before acted on" cheap: one commit
per scheduler step, not one per field.

A run is executed by one process at a time: its `owner` (an opaque token, see
`ork_core.ownership`) is set by a compare-and-set, `claim_run`, which every backend must make
atomic against other processes and other machines sharing the database (a conditional
UPDATE in SQL), and cleared by `release_run`. `ork scheduler` holds its runs through a
*lease* instead (`claim_runs`, `renew_leases`): a claim that lapses unless its owner renews
it, so that a scheduler on another machine, which no process check can see, is taken to be
dead once its lease has run out. Lease times are the database's clock where it has one
(PostgreSQL), so schedulers on machines whose clocks disagree still agree on when a lease
ends. The scheduler writes its steps fenced (`write(…, owner=…)`): a batch lands only while
its writer still owns the run, so a claim lost unawares cannot overwrite the new owner's
state. Every writing method raises
`StorageWriteError` (with the database's location and the real error) when a write is
refused, never the driver's own error.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ork_core.errors import RunClaimedError

TASK_FIELDS = frozenset(
    {
        "status",
        "attempt",
        "try_number",
        "started_at",
        "finished_at",
        "output",
        "error",
        "next_try_at",
        "idempotency_key",
        "tracker",
        "handle",
        "link",
        "external_id",
        "deferred_at",
        "last_poll_at",
        "last_poll_error",
        "poll_failures",
        "pgid",
        "uncertain_retries",
        "adopt_first",
    }
)
RUN_FIELDS = frozenset({"status", "started_at", "finished_at", "pid", "error", "managed", "cancel_requested"})
FINAL_RUN_STATUSES = frozenset({"success", "failed", "cancelled"})
QUEUED = "queued"
"""A run waiting for `ork scheduler` to start it (a tick, `ork trigger`, a backfill, a retry)."""
TRIGGERS = ("manual", "schedule", "backfill")
FINAL_TASK_STATUSES = frozenset({"success", "failed", "skipped", "upstream_failed", "cancelled"})


def batch_runs(updates: Sequence[TaskUpdate | RunUpdate], logs: Sequence[LogLine], metrics: Sequence[Metric]) -> list[str]:
    """The runs a `write` batch touches, in order, each once (what a fenced write checks)."""
    return list(dict.fromkeys([u.run_id for u in updates] + [x.run_id for x in logs] + [m.run_id for m in metrics]))


def fence_error(run_id: str, owner: str, found: str | None) -> RunClaimedError:
    return RunClaimedError(
        f"run {run_id} is no longer held by {owner} (now: {found or 'nobody'}); this batch was not written",
        run_id=run_id, owner=found,
    )


class JSONText(str):
    """A value the scheduler has already encoded as JSON (a task's output): store the text as is.

    The scheduler encodes each output once, to check it against ``max_output_bytes``; a backend
    that gets a `JSONText` for ``output`` must not encode it again.
    """

    __slots__ = ()


@dataclass
class TaskUpdate:
    """Set `fields` (names from TASK_FIELDS; `output`/`handle` are JSON-encoded) on one task.

    ``output`` usually arrives as `JSONText`, already encoded.

    `attempt_row="end"` also records attempt number `attempt` in the history table, from
    `try_number`, `status`, `started_at`, `finished_at` and `error` in `fields`. Only
    superseded attempts (retried, or cut short by a crash) are written there; the current
    attempt lives in the task's own row.
    """

    run_id: str
    task: str
    fields: dict[str, Any]
    attempt_row: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class RunUpdate:
    run_id: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class LogLine:
    run_id: str
    task: str
    attempt: int
    ts: float
    level: str
    stream: str
    line: str


@dataclass(frozen=True)
class Metric:
    run_id: str
    task: str
    attempt: int
    ts: float
    name: str
    value: float
    labels: dict[str, str]


@dataclass(frozen=True)
class RunOrigin:
    """Why a run exists, and for a scheduled one, which tick it stands for.

    (workflow name, `schedule`, `logical_ts`) is unique among runs: every backend enforces it
    with a unique key, so a tick, or a backfilled date, becomes one run however many
    processes try to create it and however often one is killed while doing so.
    """

    trigger: str = "manual"
    """``manual`` (``ork run``, ``ork trigger``), ``schedule`` (a tick) or ``backfill``."""
    schedule: str | None = None
    """The schedule's key in its workflow (its ``name``, or its position: ``"0"``, ``"1"``…)."""
    logical_ts: int | None = None
    """The tick, in epoch seconds; None for a run that stands for no tick."""
    logical_date: str | None = None
    """The tick as ISO 8601 in the schedule's time zone (what tasks and displays see)."""
    interval_start: str | None = None
    interval_end: str | None = None
    max_active_runs: int | None = None
    """For a backfill: how many of its runs may run at once (`ork backfill --max-active`)."""


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as the last `ork scheduler` (or `ork schedules`) read it from its workflow file."""

    workflow: str
    key: str
    file: str
    cron: str
    timezone: str
    catchup: bool
    max_active_runs: int | None
    spec: dict[str, Any]
    """The whole ``schedule:`` entry as validated (start, end, params…), JSON-shaped."""
    updated_at: float


@dataclass(frozen=True)
class PauseState:
    paused: bool
    changed_at: float
    """When it was last paused or unpaused: ticks up to an unpause are not caught up without ``catchup``."""


@dataclass
class TaskRecord:
    run_id: str
    name: str
    executor: str
    status: str
    attempt: int
    try_number: int
    started_at: float | None
    finished_at: float | None
    output: Any
    error: str | None
    idempotency_key: str | None = None
    tracker: str | None = None
    handle: dict[str, Any] | None = None
    link: str | None = None
    external_id: str | None = None
    deferred_at: float | None = None
    last_poll_at: float | None = None
    last_poll_error: str | None = None
    poll_failures: int = 0
    pgid: int | None = None
    next_try_at: float | None = None
    uncertain_retries: int = 0
    """Retries that repeated their try because the kickoff may have reached the service."""
    adopt_first: bool = False
    """The next attempt keeps the try (and idempotency key) and calls ``adopt`` before ``run``."""
    output_excerpt: str | None = None
    """With ``get_run(…, excerpt=n)``: the first n characters of the output's JSON text
    (``output`` is then None and ``error`` is cut to n characters too)."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class RunRecord:
    id: str
    workflow_name: str
    workflow_hash: str
    workflow_file: str
    params: dict[str, Any]
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    pid: int | None
    error: str | None
    owner: str | None = None
    """The token of the process executing the run, None when no process holds it."""
    lease_until: float | None = None
    """When the owner's lease ends (epoch seconds, the database's clock): set by `claim_runs`
    and `renew_leases`, None for a claim by `claim_run` (`ork run`, `ork resume`), which lasts
    as long as its process."""
    origin: RunOrigin = RunOrigin()
    managed: bool = False
    """Whether `ork scheduler` runs it (it was created ``queued``), not the command that created it."""
    cancel_requested: bool = False
    """Set by `ork cancel` (or the API): the process that holds the run cancels it."""
    tasks: dict[str, TaskRecord] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """None until the run finished: a running or stopped run has no duration yet (not 0)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class AttemptRecord:
    run_id: str
    task: str
    attempt: int
    try_number: int
    status: str
    started_at: float | None
    finished_at: float | None
    error: str | None


LOST = "lost"
"""What `Storage.work_status` reports for, and records on, a ``running`` item whose worker's claim has expired."""
WORK_STATUSES = ("queued", "running", "success", "failed", "cancelled", LOST)


@dataclass(frozen=True)
class NewWork:
    """An attempt to hand to the workers of `queue` (`Storage.enqueue_work`)."""

    run_id: str
    task: str
    attempt: int
    queue: str
    key: str
    """The attempt's idempotency key: enqueueing it again finds the item it made."""
    payload: dict[str, Any]


@dataclass(frozen=True)
class WorkOutcome:
    """How a worker's attempt ended (`Storage.finish_work`)."""

    id: str
    status: str
    """``success`` or ``failed``."""
    output: str | None = None
    """The output as JSON text (``success`` only)."""
    error: str | None = None


def check_outcomes(outcomes: Sequence[WorkOutcome]) -> None:
    """A backend's first step in `Storage.finish_work`: an item finishes as success or failed, nothing else."""
    for o in outcomes:
        if o.status not in ("success", "failed"):
            raise ValueError(f"a work item finishes as success or failed, not {o.status!r}")


@dataclass(frozen=True)
class WorkItem:
    """One attempt of a task with a ``queue:``, waiting for (or held by) an `ork worker`.

    Keyed by the attempt's idempotency key, so enqueueing an attempt again (a scheduler that
    was killed before it committed the deferral, then resumed) finds the same item.
    """

    id: str
    run_id: str
    task: str
    attempt: int
    queue: str
    key: str
    payload: dict[str, Any]
    """What the worker needs without the scheduler: workflow hash, params, upstream outputs, origin…"""
    status: str
    """``queued``, ``running``, ``success``, ``failed``, ``cancelled``; `work_status` says
    ``lost`` for a ``running`` item whose lease ended (its worker died or lost the database)."""
    worker: str | None = None
    lease_until: float | None = None
    output: str | None = None
    """The output as JSON text (``success`` only)."""
    error: str | None = None
    created_at: float = 0.0
    claimed_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class WorkerRecord:
    """An `ork worker` as its last heartbeat left it (for ``ork workers``)."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    started_at: float
    heartbeat_at: float
    running: int
    """Work items it holds now (``running``, lease not ended)."""


class Storage(abc.ABC):
    """A state backend for one URL. Implementations are registered per URL scheme.

    Every method is called from the scheduler's thread except `write`, which may also be
    called from worker threads flushing logs; implementations serialise internally.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    @abc.abstractmethod
    def save_workflow(self, hash_: str, name: str, file: str, source: str, compiled: dict[str, Any]) -> None:
        """Store a compiled workflow under its hash (a no-op if that hash is stored)."""

    @abc.abstractmethod
    def load_workflow(self, hash_: str) -> tuple[dict[str, Any], str]:
        """The compiled workflow and its source text for a hash."""

    @abc.abstractmethod
    def create_run(
        self, run_id: str, workflow_hash: str, workflow_name: str, workflow_file: str, params: dict[str, Any],
        tasks: Sequence[tuple[str, str]], now: float, owner: str | None = None,
        *, origin: RunOrigin | None = None, status: str = "pending",
    ) -> bool:
        """Create a run and its tasks (name, executor), all ``pending``, in one transaction.

        `owner` claims the new run in the same transaction, so no other process can take it
        between its creation and its first step. `status` is ``pending`` (the creating
        process runs it) or ``queued`` (`ork scheduler` will: the run is stored as managed).

        Returns False, writing nothing, when `origin` names a tick (``logical_ts``) that
        already has a run for this workflow and schedule: the unique key decides, inside the
        transaction, never a read before it.
        """

    @abc.abstractmethod
    def claim_run(
        self, run_id: str, owner: str, *, expected: str | None, lease: float | None = None,
    ) -> str | None:
        """Atomically set the run's owner to `owner` if it is now `expected` (None: no owner) or `owner`.

        Returns the run's owner afterwards: `owner` when the claim won, otherwise the owner
        that holds it (None if it was released after `expected` was read). Raises
        RunNotFoundError if the run does not exist. Without `lease`, a claim that changes
        hands drops the old owner's lease and one kept keeps its own; with `lease`, the
        claim is leased for that many seconds in the same write (`ork scheduler` taking a run
        from a dead owner: a claim without a lease is only ever checked on its own host, so a
        scheduler killed between the claim and a later renewal would hold the run forever for
        every scheduler elsewhere).
        """

    @abc.abstractmethod
    def release_run(self, run_id: str, owner: str) -> None:
        """Clear the run's owner (and lease) if it is `owner`; a no-op if another process holds it."""

    @abc.abstractmethod
    def claim_runs(
        self, owner: str, lease: float, *, run_ids: Collection[str] | None = None, limit: int = 100,
    ) -> list[RunRecord]:
        """Claim, for `lease` seconds, managed unfinished runs that nobody holds or whose lease has ended.

        Oldest first, at most `limit`, only among `run_ids` when given (the caller's choice of
        which queued runs its limits allow). Atomic per run against every other claimant: a run
        is claimed by one of several schedulers racing for it, and a run a claimant is busy
        with is skipped, not waited for (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). A run held
        by `claim_run` (no lease) is never taken. Returns the claimed runs, without tasks.
        """

    @abc.abstractmethod
    def renew_leases(self, owner: str, run_ids: Collection[str], lease: float) -> set[str]:
        """Extend to `lease` seconds from now the leases `owner` holds on `run_ids`; returns those it still holds.

        A run missing from the result was taken by another process after its lease ended (or
        by ``ork resume --force``): its old owner must stop it without writing to it again.
        A run `owner` holds without a lease (through `claim_run`) gets one.
        """

    @abc.abstractmethod
    def write(
        self, updates: Sequence[TaskUpdate | RunUpdate], logs: Sequence[LogLine] = (), metrics: Sequence[Metric] = (),
        *, owner: str | None = None,
    ) -> None:
        """Apply a batch in one transaction.

        With `owner`, a fence: the batch is applied only if `owner` still holds every run it
        touches, checked inside the transaction (under the lock that claims take), and
        otherwise nothing is written and RunClaimedError is raised. A scheduler whose lease
        ended while it was paused can then not overwrite what the scheduler that adopted
        the run has written since, even before its next renewal tells it.

        May be called from worker threads. When the database refuses the write (a full disk,
        an I/O error), roll back what is still open and raise StorageWriteError carrying the
        real error: the scheduler then stops the run where it stands, resumable.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str, *, excerpt: int | None = None) -> RunRecord:
        """A run with its tasks; raises RunNotFoundError (with close ids) if unknown.

        With `excerpt`, for displays: each task's output is not decoded, only the first
        `excerpt` characters of its JSON go to `TaskRecord.output_excerpt`, and errors are cut
        to `excerpt` characters — read from the database as such, so a run with big outputs
        costs what is shown, not what is stored.
        """

    @abc.abstractmethod
    def list_runs(
        self, limit: int = 50, *, unfinished: bool = False, workflow: str | None = None,
        statuses: Collection[str] | None = None, offset: int = 0, oldest_first: bool = False,
    ) -> list[RunRecord]:
        """Newest first (by creation; `oldest_first` reverses), without tasks.

        `unfinished` keeps runs not in a final status; `workflow` and `statuses` filter on
        the run's workflow name and status; `offset` skips that many (for paging).
        """

    @abc.abstractmethod
    def last_ticks(self) -> dict[tuple[str, str], int]:
        """The newest ``logical_ts`` of a ``schedule``-triggered run, per (workflow, schedule key)."""

    @abc.abstractmethod
    def save_schedules(self, workflow: str, schedules: Sequence[ScheduleRecord]) -> None:
        """Replace the stored schedules of `workflow` (none: it has no schedule any more)."""

    @abc.abstractmethod
    def list_schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule, by workflow and key."""

    @abc.abstractmethod
    def set_paused(self, workflow: str, paused: bool, now: float) -> None:
        """Pause or unpause every schedule of `workflow` (it need not have been seen yet)."""

    @abc.abstractmethod
    def pause_states(self) -> dict[str, PauseState]:
        """Workflows ever paused or unpaused, by name."""

    @abc.abstractmethod
    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every attempt of a run: superseded ones from the history, the current one from the task."""

    @abc.abstractmethod
    def logs(self, run_id: str, task: str | None = None) -> list[LogLine]: ...

    @abc.abstractmethod
    def metrics(self, run_id: str) -> list[Metric]: ...

    @abc.abstractmethod
    def deferred_tasks(self) -> list[TaskRecord]:
        """Every task in ``deferred`` state, across runs (for ``ork jobs``)."""

    # -- workers (`ork worker`) -----------------------------------------------------------
    # Not abstract: a backend that predates workers keeps working for every task without a
    # ``queue:``; a queued task on it fails with this message instead of the backend failing
    # to load.

    def _no_workers(self) -> NotImplementedError:
        return NotImplementedError(f"the storage backend {type(self).__name__} does not support workers (queue:)")

    def enqueue_work(self, items: Sequence[NewWork], now: float) -> list[str]:
        """Queue attempts for the workers of their queues, in one transaction; returns their ids, in order.

        One call for every attempt a scheduler starts in one pass: a wide fan-out costs one
        transaction, not one per task. Idempotent on each `key` (unique): when an item with
        that key exists, nothing is written for it and that item's id is returned, whatever
        its status. Items of one call are claimed in the order given.
        """
        raise self._no_workers()

    def claim_work(self, worker: str, queues: Collection[str], lease: float, limit: int) -> list[WorkItem]:
        """Claim, for `lease` seconds, at most `limit` ``queued`` items of `queues`, oldest first.

        Atomic per item against every other claimant: an item is claimed by one worker,
        and one another claimant is busy with is skipped, not waited for (``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL). A claimed item is ``running``; an item whose lease ends is
        never claimed again (its attempt is retried as a new item).
        """
        raise self._no_workers()

    def renew_work(self, worker: str, ids: Collection[str], lease: float) -> set[str]:
        """Extend the leases `worker` holds on `ids`; returns those it still holds.

        An item missing from the result was cancelled, or its lease ended before this
        renewal: the worker must stop its attempt and not report it.
        """
        raise self._no_workers()

    def finish_work(self, worker: str, outcomes: Sequence[WorkOutcome]) -> set[str]:
        """Record outcomes (``success``/``failed``) of ``running`` items `worker` holds with unexpired leases.

        Returns the ids recorded; for any other item nothing is written: its attempt is then
        someone else's concern (it was cancelled, or counted as lost and retried). One call
        for every attempt a worker finished meanwhile: one commit, not one per task.
        """
        raise self._no_workers()

    def release_work(self, worker: str, ids: Collection[str]) -> set[str]:
        """Give back ``running`` items `worker` holds (it is stopping): they are ``queued`` again, for any worker.

        The attempt is the same (same key), as an attempt cut short by a stopped scheduler is
        run again by `ork resume`; returns the ids given back.
        """
        raise self._no_workers()

    def cancel_work(self, id: str, owner: str | None = None) -> bool:
        """Cancel a ``queued`` or ``running`` item (a user's cancel, a timeout); its worker learns at its next renewal.

        With `owner`, only while the item's run is held by `owner`: a scheduler that lost the
        run (paused past its lease) must not cancel the attempt the run's new owner tracks.
        """
        raise self._no_workers()

    def work_status(self, ids: Collection[str]) -> dict[str, WorkItem]:
        """The items among `ids` that exist, by id, with ``lost`` for a ``running`` one whose lease ended.

        The comparison uses the database's clock where it has one, as leases do. ``lost`` is
        recorded, atomically against `finish_work`, before it is reported: the scheduler
        retries a lost attempt, so an item reported lost must never be finished afterwards
        (its worker checked the lease but had not committed when the item was read).
        """
        raise self._no_workers()

    def heartbeat_worker(self, worker: str, host: str, pid: int, queues: Sequence[str]) -> None:
        """Register `worker` or note that it is alive now."""
        raise self._no_workers()

    def remove_worker(self, worker: str) -> None:
        """Forget a worker that stopped (what it held has been finished or given back)."""
        raise self._no_workers()

    def list_workers(self) -> list[WorkerRecord]:
        """Every registered worker, by host and pid."""
        raise self._no_workers()

    @abc.abstractmethod
    def close(self) -> None: ...
