"""``ork worker`` and ``ork workers``: running queued tasks on other machines (`ork_core.worker_service`)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import click

from ork_core.cli import Env, _echo, _errors, main, pass_env
from ork_core.display import cell


def _queue_name(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    import re

    from ork_core.project import QUEUE_PATTERN  # here: every `ork` command imports this module, few need pydantic

    for value in values:
        if not re.match(QUEUE_PATTERN, value):
            raise click.BadParameter(f"{value!r} is not a queue name (letters, digits, '_', '.', '-'; at most 63)")
    return tuple(dict.fromkeys(values))


@main.command()
@click.option("--queue", "-q", "queues", multiple=True, default=("default",), show_default=True, callback=_queue_name,
              help="A queue to serve (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Most attempts running at once on this worker.")
@click.option("--lease", type=click.FloatRange(min=0.5), default=30.0, show_default=True, envvar="ORK_WORKER_LEASE",
              help="Seconds this worker's claim on an attempt lasts unless renewed: how long after it dies "
                   "its attempts are counted as lost and retried.")
@click.option("--poll", type=click.FloatRange(min=0.05, max=60), default=0.5, show_default=True,
              help="Seconds between looks for new work while idle.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds a stopped attempt's processes get after SIGTERM before SIGKILL.")
@pass_env
def worker(env: Env, queues: tuple[str, ...], concurrency: int, lease: float, poll: float, grace: float) -> None:
    """Run the attempts of tasks whose `queue:` is one of the --queue names, on this machine, until stopped.

    Executors are the ones installed here, configured by this project's ork.yaml; the state
    database must be the scheduler's. SIGTERM, SIGINT or SIGHUP stops it: running attempts
    are ended and given back to their queue, for another worker to run again.
    """
    import asyncio

    from ork_core.worker_service import Worker

    with _errors(env):
        project = env.project()
        storage = env.storage(project)
        service = Worker(project=project, plugins=env.plugins, storage=storage, queues=queues,
                         concurrency=concurrency, lease=lease, poll=poll, kill_grace=grace)
        signum = asyncio.run(service.serve())
    storage.close()
    if signum:
        sys.exit(128 + signum)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_env
def workers(env: Env, as_json: bool) -> None:
    """The workers registered in the state database: host, pid, queues, last heartbeat, attempts running."""
    with _errors(env):
        storage = env.storage(env.project())
        rows = storage.list_workers()
        storage.close()
    data = [
        {"id": w.id, "host": w.host, "pid": w.pid, "queues": list(w.queues), "started_at": w.started_at,
         "heartbeat_at": w.heartbeat_at, "running": w.running}
        for w in rows
    ]
    if as_json:
        _echo(json.dumps(data, indent=2))
        return
    if not data:
        click.echo("no workers")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("host", "pid", "queues", "last heartbeat", "running")
    for d in data:
        table.add_row(cell(d["host"]), str(d["pid"]), cell(", ".join(d["queues"])), _utc(d["heartbeat_at"]), str(d["running"]))
    Console().print(table)
