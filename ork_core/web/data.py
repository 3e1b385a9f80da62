"""What the API and the pages show, read through the storage contract only, masked on the way out.

Everything here goes through `ork_core.storage.base.Storage` methods — no SQL — so the web
app works on every backend (SQLite, the PostgreSQL plugin). Values that came from tasks
(outputs, errors, log lines, params) pass through `ork_core.secrets.mask` as they leave, as
they do when the CLI prints them: a secret registered in this process after a value was
stored (or a task that printed one ork did not know yet at write time) is not shown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ork_core.secrets import mask, mask_value
from ork_core.storage.base import FINAL_RUN_STATUSES, AttemptRecord, LogLine, RunRecord, Storage, TaskRecord
from ork_core.web.layout import Layout, layout

T = TypeVar("T")

RUN_STATUSES = ("pending", "queued", "running", "stopped", "success", "failed", "cancelled")
TASK_STATUSES = (
    "pending", "queued", "running", "retrying", "deferred", "success", "failed", "skipped", "upstream_failed", "cancelled",
)
DATE_SCAN_PAGE = 200
"""Runs read per storage call while filtering by date (the contract filters by workflow and status only)."""


def _text(value: str | None) -> str | None:
    return mask(value) if value else value


class Store:
    """The storage, one call at a time: the contract promises thread safety for `write` only.

    The web app answers requests from a thread pool; serialising its (short) storage calls
    costs little and is safe on any backend. Workflow snapshots never change for a hash,
    so they and their layouts are cached.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._workflows: dict[str, dict[str, Any]] = {}
        self._layouts: dict[str, Layout] = {}

    def call(self, fn: Callable[[Storage], T]) -> T:
        with self._lock:
            return fn(self.storage)

    def workflow(self, hash_: str) -> dict[str, Any]:
        found = self._workflows.get(hash_)
        if found is None:
            found = self.call(lambda s: s.load_workflow(hash_))[0]
            self._workflows[hash_] = found
        return found

    def layout(self, hash_: str) -> Layout:
        found = self._layouts.get(hash_)
        if found is None:
            wf = self.workflow(hash_)
            deps = {name: task["depends_on"] for name, task in wf["tasks"].items()}
            found = layout(wf["levels"], deps)
            self._layouts[hash_] = found
        return found


def run_summary(r: RunRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "workflow": r.workflow_name,
        "workflow_file": r.workflow_file,
        "status": r.status,
        "params": mask_value(r.params),
        "trigger": r.origin.trigger,
        "schedule": r.origin.schedule,
        "logical_date": r.origin.logical_date,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_s": r.duration,
        "error": _text(r.error),
        "managed": r.managed,
        "cancel_requested": r.cancel_requested,
        "final": r.status in FINAL_RUN_STATUSES,
    }


def attempt_json(a: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "try_number": a.try_number,
        "status": a.status,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "error": _text(a.error),
    }


def task_json(t: TaskRecord, depends_on: list[str], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": t.name,
        "executor": t.executor,
        "status": t.status,
        "depends_on": depends_on,
        "attempt": t.attempt,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "duration_s": t.duration,
        "error": _text(t.error),
        "external_id": t.external_id,
        "link": _text(t.link),
        "attempts": attempts,
    }
    if t.output_excerpt is not None:
        data["output_excerpt"] = mask(t.output_excerpt)
    else:
        data["output"] = mask_value(t.output)
    return data


def run_detail(store: Store, run_id: str, *, excerpt: int | None = None) -> dict[str, Any]:
    """A run with every task, its dependencies (from the stored workflow snapshot) and attempts."""
    record = store.call(lambda s: s.get_run(run_id, excerpt=excerpt))
    attempts = store.call(lambda s: s.attempts(run_id))
    by_task: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_task.setdefault(a.task, []).append(attempt_json(a))
    tasks_def = store.workflow(record.workflow_hash)["tasks"]
    data = run_summary(record)
    data["tasks"] = [
        task_json(t, list(tasks_def.get(t.name, {}).get("depends_on", [])), by_task.get(t.name, []))
        for t in record.tasks.values()
    ]
    return data


def list_runs(
    store: Store, *, workflow: str | None, statuses: list[str] | None, since: float | None, until: float | None,
    limit: int, offset: int,
) -> tuple[list[RunRecord], bool]:
    """One page of runs, newest first, and whether there are more.

    Storage filters by workflow and status; a date range is applied here while reading pages
    newest first, stopping at the first run created before `since`.
    """
    if since is None and until is None:
        page = store.call(lambda s: s.list_runs(limit + 1, workflow=workflow, statuses=statuses, offset=offset))
        return page[:limit], len(page) > limit
    kept: list[RunRecord] = []
    skipped = 0
    for r in _scan(store, workflow, statuses):
        if since is not None and r.created_at < since:
            break
        if until is not None and r.created_at >= until:
            continue
        if skipped < offset:
            skipped += 1
            continue
        kept.append(r)
        if len(kept) > limit:
            break
    return kept[:limit], len(kept) > limit


def _scan(store: Store, workflow: str | None, statuses: list[str] | None) -> Iterator[RunRecord]:
    start = 0
    while True:
        page = store.call(lambda s: s.list_runs(DATE_SCAN_PAGE, workflow=workflow, statuses=statuses, offset=start))
        yield from page
        if len(page) < DATE_SCAN_PAGE:
            return
        start += DATE_SCAN_PAGE


def log_json(entry: LogLine) -> dict[str, Any]:
    return {
        "task": entry.task,
        "attempt": entry.attempt,
        "ts": entry.ts,
        "level": entry.level,
        "stream": entry.stream,
        "line": mask(entry.line),
    }


@dataclass
class LogPage:
    lines: list[dict[str, Any]]
    next_offset: int
    run_status: str


def log_page(store: Store, run_id: str, task: str | None, attempt: int | None, offset: int, limit: int) -> LogPage | None:
    """Lines `offset`… of a run's (or a task's, an attempt's) log; None while there are none yet and the run goes on.

    The caller long-polls on None (`ork_core.web.app`), so a page can tail a running task
    without server-sent events holding a storage reader per open page.
    """
    lines = store.call(lambda s: s.logs(run_id, task))
    if attempt is not None:
        lines = [entry for entry in lines if entry.attempt == attempt]
    status = store.call(lambda s: s.get_run(run_id, excerpt=0)).status
    if len(lines) <= offset and status not in FINAL_RUN_STATUSES:
        return None
    chosen = lines[offset : offset + limit]
    return LogPage([log_json(entry) for entry in chosen], offset + len(chosen), status)


def job_json(t: TaskRecord) -> dict[str, Any]:
    """The fields of ``ork jobs --json``."""
    return {
        "run": t.run_id,
        "task": t.name,
        "executor": t.executor,
        "tracker": t.tracker,
        "external_id": t.external_id,
        "link": _text(t.link),
        "deferred_since": t.deferred_at,
        "last_poll": t.last_poll_at,
        "last_error": _text(t.last_poll_error),
        "poll_failures": t.poll_failures,
    }


def schedules(
    store: Store, next_tick: Callable[[Any, float], float | None] | None, now: float | None = None,
) -> list[dict[str, Any]]:
    """Every stored schedule with its pause state, last tick (from the runs) and next tick after `now`."""
    records = store.call(lambda s: s.list_schedules())
    pauses = store.call(lambda s: s.pause_states())
    last = store.call(lambda s: s.last_ticks())
    now = time.time() if now is None else now
    out = []
    for rec in records:
        pause = pauses.get(rec.workflow)
        nxt = None
        if next_tick is not None:
            try:
                nxt = next_tick(rec, now)
            except Exception:  # a schedule the scheduler would refuse: shown without a next tick
                nxt = None
        out.append(
            {
                "workflow": rec.workflow,
                "key": rec.key,
                "file": rec.file,
                "cron": rec.cron,
                "timezone": rec.timezone,
                "catchup": rec.catchup,
                "max_active_runs": rec.max_active_runs,
                "paused": bool(pause and pause.paused),
                "paused_changed_at": pause.changed_at if pause else None,
                "last_tick": last.get((rec.workflow, rec.key)),
                "next_tick": nxt,
                "updated_at": rec.updated_at,
            }
        )
    return out


__all__ = [
    "RUN_STATUSES", "TASK_STATUSES", "LogPage", "Store", "attempt_json", "job_json", "list_runs", "log_json", "log_page",
    "run_detail", "run_summary", "schedules", "task_json",
]
