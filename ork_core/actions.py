"""What a person asks of runs that a scheduler executes: trigger, cancel, retry, pause.

Each action is a write to storage and nothing else; the `ork scheduler` that holds (or will
pick up) the run acts on it. That is what lets the CLI, the web API and a script do the same
thing the same way, whether a scheduler is running or not, on any backend.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ork_core.clock import Clock
from ork_core.errors import OrkError, RunNotFoundError
from ork_core.ownership import Owner
from ork_core.plugins import Plugins
from ork_core.project import Project
from ork_core.storage.base import FINAL_RUN_STATUSES, QUEUED, RunOrigin, RunUpdate, Storage, TaskUpdate
from ork_core.workflow import CompiledWorkflow, load_workflow
from ork_core.yamlfile import suggest


def trigger(storage: Storage, workflow: CompiledWorkflow, params: dict[str, Any]) -> str:
    """Queue a manual run of `workflow` for `ork scheduler` to start; returns its id."""
    from ork_core.scheduler import create_run

    return create_run(storage, workflow, params, origin=RunOrigin("manual"), queued=True)


def request_cancel(storage: Storage, run_id: str) -> None:
    """Ask whoever executes the run to cancel it; a queued run nobody holds is cancelled here."""
    record = storage.get_run(run_id)
    if record.status in FINAL_RUN_STATUSES:
        raise OrkError(f"run {run_id} already finished ({record.status}); nothing to cancel")
    if record.status == QUEUED:
        me = Owner.current().token
        if storage.claim_run(run_id, me, expected=None) == me:  # nobody started it: cancel it now
            try:
                now = time.time()
                storage.write(
                    [TaskUpdate(run_id, t, {"status": "cancelled", "finished_at": now}) for t, rec in record.tasks.items()
                     if rec.status not in ("success", "failed", "skipped", "upstream_failed", "cancelled")]
                    + [RunUpdate(run_id, {"status": "cancelled", "finished_at": now, "error": "cancelled before it started"})]
                )
            finally:
                storage.release_run(run_id, me)
            return
    storage.write([RunUpdate(run_id, {"cancel_requested": 1})])


def retry(storage: Storage, run_id: str, tasks: Sequence[str] | None = None, *, downstream: bool = True) -> list[str]:
    """Put failed tasks (all, or `tasks`) and their downstream back to pending, and the run in the queue.

    Only a finished run can be retried: its tasks are then nobody's. The attempts they had stay
    in the history; the next attempt continues their numbering, with a fresh try (and so a
    fresh idempotency key: the failed submission is not adopted).
    """
    record = storage.get_run(run_id)
    if record.status not in FINAL_RUN_STATUSES:
        raise OrkError(f"run {run_id} is {record.status}; only a finished run can be retried")
    data, source = storage.load_workflow(record.workflow_hash)
    workflow = CompiledWorkflow.from_json(data, record.workflow_hash, source)
    failed = {n for n, t in record.tasks.items() if t.status in ("failed", "cancelled", "upstream_failed")}
    if tasks:
        unknown = [t for t in tasks if t not in record.tasks]
        if unknown:
            raise RunNotFoundError(f"run {run_id} has no task {unknown[0]!r}{suggest(unknown[0], record.tasks)}")
        chosen = set(tasks)
    else:
        chosen = {n for n in failed if record.tasks[n].status == "failed"} or failed
    if not chosen:
        raise OrkError(f"run {run_id} has no failed task to retry")
    if downstream:
        todo = list(chosen)
        while todo:
            for dependent in workflow.tasks[todo.pop()].dependents:
                if dependent not in chosen:
                    chosen.add(dependent)
                    todo.append(dependent)
    chosen = {n for n in chosen if record.tasks[n].status != "success" or n in (tasks or ())}
    me = Owner.current().token
    if storage.claim_run(run_id, me, expected=None) != me:
        raise OrkError(f"run {run_id} is held by another process; try again when it has finished")
    try:
        updates: list[TaskUpdate | RunUpdate] = []
        for name in sorted(chosen, key=workflow.order.index):
            rec = record.tasks[name]
            if rec.attempt > 0:  # keep the attempt that ended in the history
                updates.append(TaskUpdate(
                    run_id, name,
                    {"status": rec.status, "try_number": rec.try_number, "started_at": rec.started_at,
                     "finished_at": rec.finished_at, "error": rec.error},
                    "end", rec.attempt,
                ))
            updates.append(TaskUpdate(run_id, name, {
                "status": "pending", "started_at": None, "finished_at": None, "output": None, "error": None,
                "next_try_at": None, "idempotency_key": None, "tracker": None, "handle": None, "pgid": None,
                "adopt_first": 0, "uncertain_retries": 0,
            }))
        updates.append(RunUpdate(run_id, {"status": QUEUED, "finished_at": None, "error": None, "managed": 1,
                                          "cancel_requested": 0}))
        storage.write(updates)
    finally:
        storage.release_run(run_id, me)
    return sorted(chosen, key=workflow.order.index)


def set_paused(storage: Storage, workflow: str, paused: bool) -> None:
    """Pause or unpause every schedule of `workflow`; unknown names are refused with the known ones."""
    known = {s.workflow for s in storage.list_schedules()} | set(storage.pause_states())
    if workflow not in known:
        listed = ", ".join(sorted(known)) or "none yet: `ork scheduler` records them when it starts"
        raise OrkError(f"no workflow {workflow!r} with a schedule{suggest(workflow, known)}; known: {listed}")
    storage.set_paused(workflow, paused, Clock.from_env().now())  # the clock the scheduler decides ticks by


def workflow_files(project: Project, paths: Sequence[Path] = ()) -> list[Path]:
    """The workflow files named (files, or folders searched for *.yaml/*.yml), or ork.yaml's ``workflows:`` globs."""
    found: list[Path] = []
    if paths:
        for path in paths:
            if path.is_dir():
                found += sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.name != "ork.yaml"
                                and ".ork" not in p.parts)
            else:
                found.append(path)
        found = [p.resolve() for p in found]
    else:
        # glob's answers lie under the (resolved) project folder already: normalising them costs
        # no system call, where resolve() costs one per path component (`ork scheduler` rescans)
        for pattern in project.settings.workflows:
            found += sorted(Path(os.path.normpath(p)) for p in glob.glob(str(project.dir / pattern), recursive=True))
    return list(dict.fromkeys(p for p in found if p.name != "ork.yaml" or p in paths))


def load_workflow_for_trigger(
    project: Project, plugins: Plugins, name_or_path: str, storage: Storage | None = None,
) -> CompiledWorkflow:
    """A workflow by file path, or by name among ork.yaml's ``workflows:`` and the stored schedules' files.

    `storage` is the database the command works on (``--db``, ``ORK_DB``); without it, the
    project's own.
    """
    del plugins  # the project carries them
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_workflow(path, project)
    candidates: dict[str, Path] = {}
    for file in workflow_files(project):
        candidates.setdefault(_name_of(file), file)
    own = storage is None
    if storage is None:
        from ork_core.storage import open_storage, storage_url

        storage = open_storage(storage_url(None, project.dir, project.settings.storage, project.env), project.plugins.registry)
    try:
        for s in storage.list_schedules():
            candidates.setdefault(s.workflow, Path(s.file))
    finally:
        if own:
            storage.close()
    if name_or_path not in candidates:
        known = ", ".join(sorted(candidates)) or "none (list workflow files under `workflows:` in ork.yaml)"
        raise OrkError(f"no workflow named {name_or_path!r}{suggest(name_or_path, candidates)}; known: {known}")
    return load_workflow(candidates[name_or_path], project)


def _name_of(file: Path) -> str:
    """The ``name:`` of a workflow file without compiling it (a broken file keeps its file stem)."""
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return file.stem
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else file.stem


__all__ = ["load_workflow_for_trigger", "request_cancel", "retry", "set_paused", "trigger", "workflow_files"]
