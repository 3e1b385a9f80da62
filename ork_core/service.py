"""`ork scheduler`: a process that turns schedule ticks into runs and executes runs, many at once.

Durability comes from storage, not from this process's memory:

- a tick becomes a run through `create_tick_run`, which storage's unique key on (workflow,
  schedule, logical date) lets through once, so a scheduler killed at any moment and
  started again creates no second run for a tick, and finds the ticks it has not made yet
  by asking storage for the newest one it did make;
- every run it executes is claimed with a lease (`Storage.claim_runs`) that it renews every
  pass (`Storage.renew_leases`), and continued as `ork resume` continues one. A scheduler
  killed outright, or a machine gone, stops renewing: once its lease has run out, another
  scheduler on any machine claims the run and continues it, with its succeeded tasks kept
  and its deferred jobs tracked again. A scheduler that finds a lease of its own taken (it
  was paused, or cut off from the database, for longer than the lease) abandons that run
  without writing to it again: its renewal tells it, or before that its next write, which
  storage refuses because every step is written fenced by its owner (``write(owner=…)``);
- `ork trigger`, `ork cancel`, `ork retry` and `ork pause` write to storage, and this process
  reads those writes each pass: no socket, no second channel.

One pass: renew the leases of its runs, re-read changed workflow files, create the runs of
due ticks, start queued runs within each schedule's ``max_active_runs``, adopt managed runs
whose lease ended, pass on cancel requests. Between passes it sleeps until the next tick is
due, at most `poll` seconds (for the commands above) and a third of the lease (so a lease is
renewed twice before it could end), so an idle scheduler costs next to nothing.

Several schedulers may serve the same workflows on one database: the tick's unique key makes
each tick one run whichever creates it, and the lease makes each run one scheduler's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

from ork_core.actions import workflow_files
from ork_core.clock import Clock
from ork_core.display import first_line, visible
from ork_core.errors import OrkError, RunClaimedError, StorageError
from ork_core.ownership import Owner
from ork_core.plugins import Plugins
from ork_core.project import Project
from ork_core.scheduler import STOPPED, RunResult, Scheduler, _install_signal_handlers, create_tick_run, resume_scheduler
from ork_core.schedules import Schedule, Tick
from ork_core.secrets import strip_password
from ork_core.slots import SharedSlots
from ork_core.workqueue import QueueTracker
from ork_core.storage.base import QUEUED, PauseState, RunOrigin, RunRecord, ScheduleRecord, Storage
from ork_core.workflow import CompiledWorkflow, load_workflow, required_params

MAX_TICKS_PER_PASS = 500
"""Runs one pass creates at most: a catch-up of a year of hourly ticks must not stall the loop."""
RESCAN = 30.0
"""Seconds between looks for new files matching ork.yaml's ``workflows:`` globs."""
RESTAT = 5.0
"""Seconds between looks at whether a served file changed (a stat per file: the bulk of an idle pass)."""
MAX_CLAIMS_PER_PASS = 500
"""Runs one pass asks storage for at most (oldest first): one claim statement stays small."""
LEASE = 30.0
"""Seconds a scheduler's claim on a run lasts unless renewed: how long a dead scheduler's runs
wait before another adopts them. Long enough that a busy database or a pause of the process
does not lose a run to a live scheduler, short enough that adoption is not a long outage."""


@dataclass
class Served:
    """One workflow file: its last good compiled version, and what is wrong with the file now."""

    file: Path
    stamp: tuple[int, int] | None = None
    workflow: CompiledWorkflow | None = None
    error: str | None = None


@dataclass
class ScheduleState:
    workflow: CompiledWorkflow
    schedule: Schedule
    last_ts: int | None
    """The newest tick that has a run (from storage at start, then kept up to date)."""
    seen_at: float
    """When this version of the schedule was first seen: catch-up without `start` begins here."""
    next_due: float | None = None


@dataclass
class Active:
    scheduler: Scheduler
    task: asyncio.Task[RunResult]
    record: RunRecord


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_line(text: str) -> None:
    """One decision per line on stderr, stamped in UTC (what journald and kubectl logs keep)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    print(f"{stamp} {text}", file=sys.stderr, flush=True)


class RunLog:
    """The scheduler's reporter for one run: a line when it starts, when a task fails, when it ends."""

    def __init__(self, log: Callable[[str], None], run_id: str, label: str) -> None:
        self.log, self.run_id, self.label = log, run_id, label

    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None:
        self.log(f"run {run_id} {self.label}: {'resumed' if resumed else 'started'}")

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        if status in ("failed", "retrying"):
            self.log(f"run {self.run_id} {self.label}: task {visible(task)} {status} (attempt {attempt}): "
                     f"{visible(first_line(error))}")

    def run_finished(self, run_id: str, status: str) -> None:
        self.log(f"run {run_id} {self.label}: {status}")


class Service:
    """Serves the schedules of a set of workflow files and executes the runs they (and people) queue."""

    def __init__(
        self, *, project: Project, plugins: Plugins, storage: Storage, paths: Sequence[Path] = (),
        log: Callable[[str], None] | None = None, clock: Clock | None = None, poll: float = 1.0,
        max_concurrency: int | None = None, kill_grace: float = 5.0, lease: float = LEASE,
    ) -> None:
        self.project, self.plugins, self.storage = project, plugins, storage
        self.paths = list(paths)
        self.log = log or _log_line
        self.clock = clock or Clock.from_env()
        self.poll = poll
        self.kill_grace = kill_grace
        self.lease = lease
        self.slots = SharedSlots(max_concurrency or project.settings.max_concurrency)
        self.queue_tracker = QueueTracker(storage)
        """One tracker of queued tasks for every run: their polls share reads."""
        self.served: dict[Path, Served] = {}
        self.schedules: dict[tuple[str, str], ScheduleState] = {}
        self.active: dict[str, Active] = {}
        self.owner = Owner.current().token
        self._wake: asyncio.Event | None = None
        self._stop_signal: int | None = None
        self._stop_count = 0
        self._last_scan = -math.inf
        self._last_stat = -math.inf
        self._pauses: dict[str, PauseState] | None = None
        self._earliest = -math.inf
        """The first due tick over all schedules, as of the last full look at them."""
        self._version = 0
        """Counts changes to `schedules` (files read, dropped): a change makes the next pass look at all."""
        self._earliest_version = -1
        self._saved: set[str] = set()
        """Hashes of the workflow snapshots this process stored: each is written once, not per tick."""
        self._refused: set[str] = set()
        """Runs that could not be started (e.g. a missing snapshot): reported once, not every pass."""

    # -- signals -----------------------------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        """Stop creating and starting runs; stop every run resumably (a second signal: SIGKILL trees)."""
        self._stop_count += 1
        if self._stop_signal is None:
            self._stop_signal = signum
            self.log(f"stopping on {signal.Signals(signum).name}: no new runs; running ones stop resumably")
        for active in self.active.values():
            active.scheduler.request_stop(signum)
        if self._wake is not None:
            self._wake.set()

    # -- workflow files ----------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        return workflow_files(self.project, self.paths)

    def reload(self, now_real: float) -> None:
        """Read workflow files that are new or changed; a file that turned invalid keeps its last good version."""
        if now_real - self._last_scan >= RESCAN or not self.served:
            self._last_scan = now_real
            files = self._files()
            for gone in set(self.served) - set(files):
                old = self.served.pop(gone)
                if old.workflow is not None:
                    self._drop(old.workflow.name)
                    self.log(f"workflow {old.workflow.name}: {gone} is gone; its schedules stop")
            for file in files:
                self.served.setdefault(file, Served(file))
        elif now_real - self._last_stat < RESTAT:
            return
        self._last_stat = now_real
        changed = False
        for served in self.served.values():
            stamp = _stamp(served.file)
            if stamp == served.stamp:
                continue
            served.stamp = stamp
            changed |= self._load(served)
        if changed:
            self._check_names()

    def _load(self, served: Served) -> bool:
        try:
            workflow = load_workflow(served.file, self.project)
        except OrkError as exc:
            text = str(exc)
            if text != served.error:
                kept = "; its last good version keeps its schedule" if served.workflow is not None else ""
                self.log(f"workflow file {served.file} is invalid{kept}:\n{visible(text)}")
            served.error = text
            return False
        served.error = None
        if served.workflow is not None and served.workflow.hash == workflow.hash:
            return False
        before = served.workflow
        served.workflow = workflow
        if before is not None and before.name != workflow.name:
            self._drop(before.name)
        self._register(workflow)
        verb = "reloaded" if before is not None else "serving"
        self.log(f"workflow {workflow.name}: {verb} {served.file} ({len(workflow.schedules)} schedule(s))")
        return True

    def _check_names(self) -> None:
        seen: dict[str, Path] = {}
        for served in self.served.values():
            if served.workflow is None:
                continue
            other = seen.setdefault(served.workflow.name, served.file)
            if other != served.file:
                self.log(f"warning: workflow name {served.workflow.name!r} is used by {other} and {served.file}; "
                         "the schedules of the one read last apply")

    def _register(self, workflow: CompiledWorkflow) -> None:
        stored = {(s.workflow, s.key): s for s in self.storage.list_schedules() if s.workflow == workflow.name}
        last = self.storage.last_ticks()
        now = self.clock.now()
        records = []
        self._drop(workflow.name)
        for schedule in workflow.schedules:
            spec = schedule.to_json()
            old = stored.get((workflow.name, schedule.key))
            seen_at = old.updated_at if old is not None and old.spec == spec else now
            records.append(ScheduleRecord(
                workflow.name, schedule.key, workflow.file, schedule.cron, schedule.timezone, schedule.catchup,
                schedule.max_active_runs, spec, seen_at,
            ))
            self._version += 1
            self.schedules[(workflow.name, schedule.key)] = ScheduleState(
                workflow, schedule, last.get((workflow.name, schedule.key)), seen_at
            )
        self.storage.save_schedules(workflow.name, records)

    def _drop(self, name: str) -> None:
        for key in [k for k in self.schedules if k[0] == name]:
            del self.schedules[key]
            self._version += 1

    # -- ticks -------------------------------------------------------------------------------------

    def _due(self, state: ScheduleState, now: float, pause: PauseState | None) -> list[Tick]:
        s = state.schedule
        if s.catchup:
            after: float | None = state.last_ts
            if after is None and s.start is None:
                after = state.seen_at
            return list(islice(s.ticks(after, now), MAX_TICKS_PER_PASS))
        latest = s.latest(now)
        floor = state.last_ts if state.last_ts is not None else -math.inf
        if pause is not None:  # ticks up to an unpause are not made up for without catchup
            floor = max(floor, pause.changed_at)
        return [latest] if latest is not None and latest.ts > floor else []

    def create_due_runs(self, now: float, pauses: dict[str, PauseState]) -> int:
        """Create the runs of every due tick; returns how many were created."""
        if pauses == self._pauses and now < self._earliest and self._earliest_version == self._version:
            return 0  # nothing is due, and no pause changed: the usual idle pass does no more
        self._pauses = pauses
        created = 0
        for (name, key), state in self.schedules.items():
            pause = pauses.get(name)
            if pause is not None and pause.paused:
                state.next_due = None
                continue
            if state.next_due is not None and now < state.next_due and state.last_ts is not None:
                continue
            for tick in self._due(state, now, pause):
                origin = RunOrigin("schedule", key, tick.ts, tick.logical_date, tick.interval_start, tick.interval_end)
                params = {**state.workflow.params, **state.schedule.params}
                missing = sorted(p for p in required_params(state.workflow) if params.get(p) is None)
                if missing:
                    self.log(f"workflow {name} schedule {key}: tick {tick.logical_date} not run: parameter(s) "
                             f"{', '.join(missing)} have no value (set them in the schedule's params)")
                    state.last_ts = tick.ts
                    continue
                saved = state.workflow.hash in self._saved
                run_id = create_tick_run(self.storage, state.workflow, params, origin=origin, queued=True,
                                         snapshot_saved=saved)
                self._saved.add(state.workflow.hash)
                state.last_ts = tick.ts
                if run_id is None:
                    self.log(f"workflow {name} schedule {key}: tick {tick.logical_date} has a run already")
                else:
                    created += 1
                    self.log(f"run {run_id} {name}: created for tick {tick.logical_date} (schedule {key})")
            nxt = state.schedule.next_after(max(now, state.last_ts or -math.inf))
            state.next_due = nxt.ts if nxt is not None else None
        dues = [s.next_due for s in self.schedules.values() if s.next_due is not None]
        self._earliest = min(dues) if dues else math.inf
        self._earliest_version = self._version
        return created

    # -- runs ----------------------------------------------------------------------------------------

    def _limit_of(self, record: RunRecord) -> int | None:
        """How many runs of `record`'s group may run at once: a backfill's own, else its schedule's."""
        if record.origin.max_active_runs is not None:
            return record.origin.max_active_runs
        state = self.schedules.get((record.workflow_name, record.origin.schedule or ""))
        return state.schedule.max_active_runs if state is not None else None

    @staticmethod
    def _group(record: RunRecord) -> tuple[str, str | None, bool]:
        """Runs that share a limit: a schedule's ticks, or one schedule's backfills (beside the ticks)."""
        return (record.workflow_name, record.origin.schedule, record.origin.trigger == "backfill")

    def renew_leases(self) -> None:
        """Renew the lease of every run this process executes; abandon those another process took."""
        ids = [run_id for run_id, a in self.active.items() if not a.task.done() and not a.scheduler.abandoned]
        if not ids:
            return
        try:
            held = self.storage.renew_leases(self.owner, ids, self.lease)
        except StorageError as exc:  # the runs go on; a lease that ends meanwhile is found lost next time
            self.log(f"could not renew the leases of {len(ids)} run(s): {visible(exc)}; trying again next pass")
            return
        for run_id in ids:
            active = self.active.get(run_id)
            if run_id in held or active is None or active.task.done():
                continue
            self.log(f"run {run_id} {active.record.workflow_name}: its lease ended and another process took it; "
                     "stopping it here without writing to it again")
            active.scheduler.abandon()

    def start_runs(self) -> None:
        """Start queued runs (oldest first) within their schedule's limit; adopt managed runs whose owner is gone.

        Which runs to try is this process's choice (limits, order); which it gets is storage's
        (`claim_runs`): of several schedulers wanting the same run, one claims it, the others
        skip it. A queued run another scheduler has claimed counts against its limit, so two
        schedulers do not start two runs of a schedule that allows one.
        """
        unfinished = self.storage.list_runs(100_000, unfinished=True, oldest_first=True)
        active: dict[tuple[str, str | None, bool], int] = {}
        for record in unfinished:
            if record.status != QUEUED or record.owner is not None:
                k = self._group(record)
                active[k] = active.get(k, 0) + 1
        wanted: dict[str, RunRecord] = {}
        for record in unfinished:
            mine = self.active.get(record.id)
            if mine is not None:
                if record.cancel_requested:
                    mine.scheduler.request_cancel()
                continue
            if not record.managed or record.id in self._refused or record.owner == self.owner:
                continue
            if record.owner is not None and not Owner.parse(record.owner).alive():
                # a process of this host that is gone: no need to wait for its lease to end;
                # resume's compare-and-set from that owner lets one of several claimants win
                self._start(record)
                continue
            if record.owner is not None and record.lease_until is None:
                continue  # held through claim_run (`ork run`, `ork resume`) by a live process
            if record.status == QUEUED and record.owner is None:
                limit = self._limit_of(record) if record.origin.trigger != "manual" else None
                k = self._group(record)
                if limit is not None and active.get(k, 0) >= limit:
                    continue  # waits, in order: a later tick of the same schedule waits behind it
                active[k] = active.get(k, 0) + 1
            wanted[record.id] = record  # unheld, or leased by another: storage knows if that lease ended
        if not wanted:
            return
        ids = list(islice(wanted, MAX_CLAIMS_PER_PASS))
        for record in self.storage.claim_runs(self.owner, self.lease, run_ids=ids, limit=len(ids)):
            before = wanted[record.id].owner
            if before is not None:
                self.log(f"run {record.id} {record.workflow_name}: adopted from {Owner.parse(before).describe()}, "
                         "whose lease ended")
            self._start(record, claimed=True)

    def _start(self, record: RunRecord, *, claimed: bool = False) -> None:
        label = record.workflow_name + (f" [{record.origin.logical_date}]" if record.origin.logical_date else "")
        try:
            scheduler = resume_scheduler(
                project=self.project, plugins=self.plugins, storage=self.storage, run_id=record.id,
                reporter=RunLog(self.log, record.id, label), shared=self.slots, queue_tracker=self.queue_tracker,
                lease=self.lease,  # from a dead owner: leased in the claim itself, never held without one
            )
        except RunClaimedError:
            return  # another process took it first
        except OrkError as exc:
            self._refused.add(record.id)
            self.log(f"run {record.id} {record.workflow_name}: cannot be started: {visible(exc)}")
            if claimed:  # not left leased to a process that will not run it
                with contextlib.suppress(OrkError):
                    self.storage.release_run(record.id, self.owner)
            return
        scheduler.kill_grace = self.kill_grace
        scheduler.fenced = True
        task = asyncio.create_task(scheduler.run(resumed=record.status != QUEUED), name=f"ork-run-{record.id}")
        self.active[record.id] = Active(scheduler, task, record)
        task.add_done_callback(functools.partial(self._ended, record.id))

    def _ended(self, run_id: str, task: asyncio.Task[RunResult]) -> None:
        ended = self.active.pop(run_id, None)
        if ended is not None and ended.scheduler.abandon_reason:
            self.log(f"run {run_id} {ended.record.workflow_name}: another process took it over; stopped here "
                     f"without writing to it again ({visible(ended.scheduler.abandon_reason)})")
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log(f"run {run_id}: ended by an error of ork: {visible(exc)}; it stays resumable")
            if not isinstance(exc, OrkError):
                self._refused.add(run_id)
        if self._wake is not None:
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------------------

    def _sleep_for(self) -> float:
        most = min(self.poll, self.lease / 3)
        if self._earliest == math.inf:  # (as of this pass's look at the schedules)
            return most
        return min(most, self.clock.seconds_until(self._earliest))

    async def serve(self) -> int:
        """Serve until a stop signal; returns that signal's number."""
        self._wake = asyncio.Event()
        remove = _install_signal_handlers(asyncio.get_running_loop(), self)  # the run loop's own, one mechanism
        try:
            self.log(f"ork scheduler {self.owner} on {strip_password(self.storage.url)}, "
                     f"max_concurrency {self.slots.limit}, lease {self.lease:g}s, clock {_utc(self.clock.now())}")
            while self._stop_signal is None:
                self._wake.clear()
                self.renew_leases()
                self.reload(time.monotonic())
                self.create_due_runs(self.clock.now(), self.storage.pause_states())
                if self._stop_signal is None:
                    self.start_runs()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._sleep_for())
            await self._stop_runs()
        finally:
            remove()
        return self._stop_signal or 0

    async def _stop_runs(self) -> None:
        assert self._stop_signal is not None
        for active in list(self.active.values()):
            active.scheduler.request_stop(self._stop_signal)
        tasks = [a.task for a in self.active.values()]
        while not all(t.done() for t in tasks):  # still leased while they stop: nobody adopts them early
            await asyncio.wait(tasks, timeout=self.lease / 3)
            self.renew_leases()
        results = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
        stopped = sum(1 for r in results if r.status == STOPPED)
        self.log(f"stopped: {stopped} run(s) left resumable; the next `ork scheduler` continues them")


__all__ = ["Clock", "Service"]
