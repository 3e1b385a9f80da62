"""The commands of the schedule service: ``ork scheduler`` and those that act on it through storage.

``schedules``, ``pause``, ``unpause``, ``trigger``, ``backfill``, ``cancel`` and ``retry`` only
write to (or read) storage, so they work the same while a scheduler runs and without one.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from ork_core.cli import Env, _echo, _errors, _fail, _parse_params, main, pass_env
from ork_core.display import cell


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--concurrency", type=click.IntRange(min=1), help="Most tasks running at once, across all runs.")
@click.option("--poll", type=click.FloatRange(min=0.05, max=60), default=1.0, show_default=True,
              help="Seconds between looks at storage for triggers, pauses and cancels.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds a stopped task's processes get after SIGTERM before SIGKILL.")
@click.option("--lease", type=click.FloatRange(min=0.5), default=30.0, show_default=True, envvar="ORK_SCHEDULER_LEASE",
              help="Seconds this scheduler's claim on a run lasts unless renewed: how long after it dies "
                   "another scheduler adopts its runs.")
@pass_env
def scheduler(
    env: Env, paths: tuple[Path, ...], concurrency: int | None, poll: float, grace: float, lease: float,
) -> None:
    """Create runs when their schedules are due and execute queued runs, until stopped.

    Serves the workflow files (or folders) given, or those that ork.yaml's `workflows:`
    globs name. SIGTERM, SIGINT or SIGHUP stops it: no new runs; running tasks' processes
    are ended; external jobs are left running; the next `ork scheduler` continues.

    Several may serve the same workflows on one database (PostgreSQL across machines): each
    tick becomes one run, each run is executed by one scheduler at a time, and the runs of
    one that dies are adopted by another once their lease has ended.
    """
    import asyncio

    from ork_core.actions import workflow_files
    from ork_core.service import Service

    with _errors(env):
        project = env.project(paths[0] if paths and paths[0].is_dir() else (paths[0].parent if paths else None))
        if not paths and not project.settings.workflows:
            _fail("no workflows to serve: give workflow files or folders, or list globs under `workflows:` in ork.yaml")
        missing = [p for p in paths if not p.exists()]
        if missing:
            _fail(f"{missing[0]}: no such file or folder")
        if not workflow_files(project, paths):
            _fail(f"no workflow files found in {', '.join(map(str, paths)) or project.settings.workflows}")
        storage = env.storage(project)
        service = Service(project=project, plugins=env.plugins, storage=storage, paths=paths,
                          max_concurrency=concurrency, poll=poll, kill_grace=grace, lease=lease)
        signum = asyncio.run(service.serve())
    storage.close()
    if signum:
        sys.exit(128 + signum)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_env
def schedules(env: Env, as_json: bool) -> None:
    """Every schedule: workflow, cron, time zone, paused, last and next tick, active runs."""
    from ork_core.schedules import Schedule
    from ork_core.storage.base import FINAL_RUN_STATUSES, QUEUED

    with _errors(env):
        storage = env.storage(env.project())
        stored = storage.list_schedules()
        pauses = storage.pause_states()
        last = storage.last_ticks()
        unfinished = storage.list_runs(100_000, unfinished=True)
    now = time.time()
    rows: list[dict[str, Any]] = []
    for s in stored:
        schedule = Schedule.from_json(s.spec)
        pause = pauses.get(s.workflow)
        last_ts = last.get((s.workflow, s.key))
        nxt = None if pause is not None and pause.paused else schedule.next_after(max(now, last_ts or 0))
        mine = [r for r in unfinished if r.workflow_name == s.workflow and r.origin.schedule == s.key]
        rows.append({
            "workflow": s.workflow, "schedule": s.key, "file": s.file, "cron": s.cron, "timezone": s.timezone,
            "catchup": s.catchup, "max_active_runs": s.max_active_runs,
            "paused": bool(pause and pause.paused),
            "last_tick": schedule.tick(last_ts).logical_date if last_ts is not None else None,
            "next_tick": nxt.logical_date if nxt is not None else None,
            "active_runs": sum(1 for r in mine if r.status not in FINAL_RUN_STATUSES and r.status != QUEUED),
            "queued_runs": sum(1 for r in mine if r.status == QUEUED),
        })
    if as_json:
        _echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _echo("no schedules yet: `ork scheduler` records the schedules of the workflows it serves")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("workflow", "schedule", "cron", "timezone", "paused", "last tick", "next tick", "active", "queued")
    for r in rows:
        table.add_row(
            cell(r["workflow"]), cell(r["schedule"]), cell(r["cron"]), cell(r["timezone"]),
            cell("paused", "yellow") if r["paused"] else "", cell(r["last_tick"] or "-"), cell(r["next_tick"] or "-"),
            str(r["active_runs"]), str(r["queued_runs"]),
        )
    Console().print(table)


def _pause(env: Env, workflow: str, paused: bool) -> None:
    from ork_core.actions import set_paused

    with _errors(env):
        set_paused(env.storage(env.project()), workflow, paused)
    _echo(f"{workflow}: {'paused' if paused else 'unpaused'}")


@main.command()
@click.argument("workflow")
@pass_env
def pause(env: Env, workflow: str) -> None:
    """No new ticks for WORKFLOW's schedules until unpaused (runs already made go on)."""
    _pause(env, workflow, True)


@main.command()
@click.argument("workflow")
@pass_env
def unpause(env: Env, workflow: str) -> None:
    """Ticks again: with `catchup: true` the missed ones are made up for, without it the next one is run."""
    _pause(env, workflow, False)


@main.command()
@click.argument("workflow")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A run parameter (repeatable).")
@pass_env
def trigger(env: Env, workflow: str, params: tuple[str, ...]) -> None:
    """Queue a run of WORKFLOW (a name or a file) for `ork scheduler` to start; prints its id."""
    from ork_core.actions import load_workflow_for_trigger
    from ork_core.actions import trigger as queue_run
    from ork_core.scheduler import coerce_params

    with _errors(env):
        project = env.project()
        storage = env.storage(project)
        compiled = load_workflow_for_trigger(project, env.plugins, workflow, storage)
        run_params = coerce_params(compiled, _parse_params(params))
        run_id = queue_run(storage, compiled, run_params)
    click.echo(run_id)


def _day(value: str, field: str) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time())
        return datetime.fromisoformat(value)
    except ValueError:
        _fail(f"--{field} {value!r}: write a date (2026-01-31) or a date and time (2026-01-31T06:00)")


@main.command()
@click.argument("workflow")
@click.option("--start", required=True, metavar="DATE", help="First logical date (inclusive), in the schedule's time zone.")
@click.option("--end", required=True, metavar="DATE", help="Last logical date (inclusive; a date covers that whole day).")
@click.option("--schedule", "key", help="Which schedule of the workflow (default: its only one).")
@click.option("--max-active", type=click.IntRange(min=1), help="Runs of this backfill running at once (default: the schedule's max_active_runs).")
@pass_env
def backfill(env: Env, workflow: str, start: str, end: str, key: str | None, max_active: int | None) -> None:
    """Queue a run for every tick from --start to --end that has none yet (running it twice adds nothing)."""
    from datetime import timedelta

    from ork_core.actions import load_workflow_for_trigger
    from ork_core.scheduler import create_tick_run
    from ork_core.storage.base import RunOrigin

    with _errors(env):
        project = env.project()
        storage = env.storage(project)
        compiled = load_workflow_for_trigger(project, env.plugins, workflow, storage)
        if not compiled.schedules:
            _fail(f"{compiled.file}: workflow {compiled.name} has no schedule to backfill")
        chosen = [s for s in compiled.schedules if key is None or s.key == key]
        if key is None and len(chosen) > 1:
            _fail(f"workflow {compiled.name} has {len(chosen)} schedules; pick one with --schedule "
                  f"({', '.join(s.key for s in compiled.schedules)})")
        if not chosen:
            _fail(f"workflow {compiled.name} has no schedule {key!r}; it has: {', '.join(s.key for s in compiled.schedules)}")
        schedule = chosen[0]
        first, last = _day(start, "start"), _day(end, "end")
        if len(end) == 10:
            last = last + timedelta(days=1) - timedelta(seconds=1)
        zone = schedule.zone
        lo = (first if first.tzinfo else first.replace(tzinfo=zone)).timestamp()
        hi = (last if last.tzinfo else last.replace(tzinfo=zone)).timestamp()
        if hi < lo:
            _fail(f"--end {end} is before --start {start}")
        params = {**compiled.params, **schedule.params}
        created = existing = 0
        unbounded = replace(schedule, start=None, end=None)  # a backfill names its own range
        for tick in unbounded.ticks(lo - 1, hi):
            origin = RunOrigin(
                "backfill", schedule.key, tick.ts, tick.logical_date, tick.interval_start, tick.interval_end,
                max_active_runs=max_active or schedule.max_active_runs,
            )
            if create_tick_run(storage, compiled, params, origin=origin, queued=True) is None:
                existing += 1
            else:
                created += 1
    _echo(f"{compiled.name}: {created} run(s) queued, {existing} tick(s) in the range had a run already")


@main.command()
@click.argument("run_id")
@pass_env
def cancel(env: Env, run_id: str) -> None:
    """Cancel a run: the process executing it cancels it (a queued run is cancelled at once)."""
    from ork_core.actions import request_cancel

    with _errors(env):
        request_cancel(env.storage(env.project()), run_id)
    _echo(f"run {run_id}: cancel requested")


@main.command()
@click.argument("run_id")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable); default: every failed task.")
@click.option("--no-downstream", is_flag=True, help="Do not reset the tasks that depend on them.")
@pass_env
def retry(env: Env, run_id: str, tasks: tuple[str, ...], no_downstream: bool) -> None:
    """Put a finished run's failed tasks (and what depends on them) back in the queue for `ork scheduler`."""
    from ork_core.actions import retry as reset

    with _errors(env):
        reset_tasks = reset(env.storage(env.project()), run_id, list(tasks) or None, downstream=not no_downstream)
    _echo(f"run {run_id}: queued again with {', '.join(reset_tasks)}")

