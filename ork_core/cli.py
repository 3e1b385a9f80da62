"""The ``ork`` command line. Errors print as one message; ``--debug`` shows the traceback.

Exit codes: 0 success, 1 a run (or validation) failed, 2 the input was invalid (or the state
database could not be used, or another process executes the run), 128 + the signal when
SIGINT (130), SIGTERM (143) or SIGHUP (129) stopped ``ork run`` / ``ork resume``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from ork_core.display import cell, line, visible
from ork_core.errors import ConfigError, OrkError



def _style(status: str) -> str:
    from ork_core.progress import STYLE

    return STYLE.get(status, "")


class Env:
    """What every command needs: plugins, the project, storage — built lazily, once."""

    def __init__(self, debug: bool, db: str | None) -> None:
        self.debug = debug
        self.db = db
        self._plugins: Any = None

    @property
    def plugins(self) -> Any:
        if self._plugins is None:
            from ork_core.plugins import build_plugin_manager

            self._plugins = build_plugin_manager()
        return self._plugins

    def project(self, start: Path | None = None) -> Any:
        from ork_core.project import Project
        from ork_core.scratch import sweep

        project = Project.load(start or Path.cwd(), self.plugins)
        sweep(project.dir)  # the scratch folders of killed ork processes
        return project

    def storage(self, project: Any) -> Any:
        from ork_core.storage import open_storage, storage_url

        return open_storage(storage_url(self.db, project.dir, project.settings.storage), self.plugins.registry)


def _echo(text: str, err: bool = False) -> None:
    """Print one line of ork's output: task text is shown, never interpreted (`ork_core.display`)."""
    click.echo(visible(text), err=err)


def _fail(message: str, code: int = 2) -> NoReturn:
    _echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors(env: Env, code: int = 2) -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        if env.debug:
            traceback.print_exc()
        _echo("error: invalid input:", err=True)
        for problem in exc.problems:
            _echo(f"  {problem}", err=True)
        sys.exit(code)
    except OrkError as exc:
        if env.debug:
            traceback.print_exc()
        _fail(str(exc), code)


class OrkGroup(click.Group):
    """Built-in commands plus those plugins register with ``ork_register_commands`` (loaded lazily)."""

    def _plugin_commands(self, ctx: click.Context) -> Any:
        env = ctx.find_object(Env) or Env(False, None)
        try:
            return env.plugins.registry
        except OrkError:
            return None

    def list_commands(self, ctx: click.Context) -> list[str]:
        registry = self._plugin_commands(ctx)
        extra = [n for n in registry.names("command") if n not in self.commands] if registry else []
        return sorted([*super().list_commands(ctx), *extra])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        registry = self._plugin_commands(ctx)
        if registry is None or cmd_name not in registry.entries["command"]:
            return None
        try:
            command = registry.get("command", cmd_name).load()
        except OrkError as exc:
            _fail(f"command {cmd_name!r}: {exc}")
        if not isinstance(command, click.Command):
            _fail(f"command {cmd_name!r} is registered as {type(command).__name__}, not a click command")
        return command


@click.group(cls=OrkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--db", metavar="URL", envvar="ORK_DB", help="State database URL (default: .ork/ork.db beside ork.yaml).")
@click.version_option(package_name="ork-core", prog_name="ork")
@click.pass_context
def main(ctx: click.Context, debug: bool, db: str | None) -> None:
    """ork runs YAML workflows of tasks on pluggable executors."""
    ctx.obj = Env(debug, db)


pass_env = click.make_pass_decorator(Env)


def entry() -> None:
    """The ``ork`` command (and ``python -m ork_core``): ork owns this process's signals to the end.

    Once a command is done, every state change is committed; a SIGINT/SIGTERM/SIGHUP that
    arrives while the interpreter shuts down (Python restores the default actions first, and
    that takes a while) is ignored rather than killing the process, so its exit code stays
    the one ork chose (0, 1, 2, or 128 + the signal that stopped the run).
    """
    import signal

    try:
        main()
    finally:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)


# --- executors -------------------------------------------------------------------------------


def executor_rows(env: Env, project: Any) -> list[dict[str, Any]]:
    """Every executor the project can use, without importing any executor module."""
    import importlib.util

    registry = env.plugins.registry
    rows: list[dict[str, Any]] = []
    for name in registry.names("executor"):
        regs = registry.entries["executor"][name]
        for reg in regs:
            conflict = len(regs) > 1
            others = [r.source.label for r in regs if r is not reg]
            rows.append(
                {
                    "name": name,
                    "type": name,
                    "target": reg.target_path,
                    "source": reg.source.label,
                    "distribution": reg.source.distribution,
                    "version": reg.source.version,
                    "status": "conflict" if conflict else "ok",
                    "error": f"type name also registered by {', '.join(others)}" if conflict else None,
                }
            )
    for name, entry in project.settings.executors.items():
        row: dict[str, Any] = {
            "name": name,
            "type": entry.type,
            "target": entry.type,
            "source": "ork.yaml",
            "distribution": None,
            "version": None,
            "status": "ok",
            "error": None,
        }
        if entry.type in registry.entries["executor"]:
            regs = registry.entries["executor"][entry.type]
            if entry.distribution:
                regs = [r for r in regs if r.source.distribution == entry.distribution]
            if len(regs) == 1:
                row.update(target=regs[0].target_path, distribution=regs[0].source.distribution, version=regs[0].source.version)
            elif len(regs) > 1:
                row.update(status="conflict", error=f"pick one with 'distribution:': {', '.join(r.source.label for r in regs)}")
            else:
                row.update(status="error", error=f"no installed distribution {entry.distribution!r} registers {entry.type!r}")
        elif ":" in entry.type:
            module = entry.type.split(":", 1)[0]
            sys.path.insert(0, str(project.dir))
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            finally:
                sys.path.remove(str(project.dir))
            if not found:
                row.update(status="error", error=f"module {module!r} not found in {project.dir}")
        else:
            broken = registry.quarantined_for(entry.type)
            if broken is not None:
                row.update(status="error", error=f"plugin {broken.label} failed to load: {broken.error}")
            else:
                import difflib

                close = difflib.get_close_matches(entry.type, registry.names("executor"), n=2)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                row.update(status="error", error=f"unknown executor type {entry.type!r}{hint}")
        rows.append(row)
    for q in registry.quarantined:
        rows.append(
            {
                "name": q.plugin,
                "type": None,
                "target": None,
                "source": q.label,
                "distribution": q.distribution,
                "version": q.version,
                "status": "error",
                "error": q.error,
            }
        )
    return rows


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_env
@click.pass_context
def executors(ctx: click.Context, env: Env, as_json: bool) -> None:
    """List every executor available in this project (built-in, plugins, ork.yaml)."""
    if ctx.invoked_subcommand is not None:
        return
    with _errors(env):
        rows = executor_rows(env, env.project())
    if as_json:
        _echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "type", "source", "status")
    for row in rows:
        status = cell(row["status"]) if row["status"] == "ok" else line((row["status"], "red"), f": {row['error']}")
        table.add_row(cell(row["name"]), cell(row["type"] or "-"), cell(row["source"]), status)
    Console().print(table)


@executors.command("show")
@click.argument("name")
@pass_env
def executors_show(env: Env, name: str) -> None:
    """Show an executor's config fields and documentation."""
    with _errors(env):
        project = env.project()
        resolved = project.resolve(name) if name in project.settings.executors else None
        if resolved is None:
            reg = env.plugins.registry.get("executor", name)
            from ork_core.executors import spec_of

            spec = spec_of(reg.load())
            source = reg.source.label
        else:
            spec, source = resolved.spec, resolved.source
    _echo(f"{name}  ({spec.cls.__module__}:{spec.cls.__qualname__}, from {source})")
    if spec.doc:
        _echo("\n" + spec.doc)
    for title, model in (("config (ork.yaml)", spec.config_model), ("task keys (workflow)", spec.task_config_model)):
        if model is None:
            continue
        _echo(f"\n{title}:")
        schema = model.model_json_schema()
        required = set(schema.get("required", []))
        for field_name, info in model.model_fields.items():
            prop = schema.get("properties", {}).get(field_name, {})
            kind = prop.get("type") or " | ".join(str(o.get("type", o.get("$ref", "?"))) for o in prop.get("anyOf", [])) or "object"
            default = "required" if field_name in required else f"default {info.get_default(call_default_factory=True)!r}"
            doc = f" — {info.description}" if info.description else ""
            _echo(f"  {field_name}: {kind} ({default}){doc}")
    if spec.optional:
        _echo(f"\noptional methods: {', '.join(sorted(spec.optional))}")


# --- validate ----------------------------------------------------------------------------------


@main.command()
@click.argument("workflows", nargs=-1, type=click.Path(path_type=Path))
@pass_env
def validate(env: Env, workflows: tuple[Path, ...]) -> None:
    """Validate workflow files, or ork.yaml when none is given."""
    from ork_core.workflow import load_workflow

    problems = []
    with _errors(env, code=1):
        if not workflows:
            project = env.project()
            problems = project.validate()
            if not problems:
                where = project.file or f"{project.dir} (no ork.yaml; built-in executors only)"
                click.echo(f"ok: {where}: {len(project.settings.executors)} executor(s) valid")
        for wf in workflows:
            project = env.project(wf.parent if wf.parent != Path("") else Path.cwd())
            try:
                compiled = load_workflow(wf, project)
                click.echo(f"ok: {wf}: {len(compiled.tasks)} task(s) in {len(compiled.levels)} level(s)")
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        _echo("error: invalid input:", err=True)
        for p in problems:
            _echo(f"  {p}", err=True)
        sys.exit(1)


# --- run / resume --------------------------------------------------------------------------------


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--param {item!r}: expected name=value")
        params[key] = value
    return params


def _reporter(quiet: bool) -> Any:
    from ork_core.progress import make_reporter

    return make_reporter(quiet=quiet)


@main.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A run parameter (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Most tasks running at once.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the run id and the result.")
@pass_env
def run(env: Env, workflow: Path, params: tuple[str, ...], concurrency: int | None, quiet: bool) -> None:
    """Run a workflow and wait for it to finish."""
    started: list[str] = []
    _stop_on_signals(started)  # first: the imports below take a while
    from ork_core.scheduler import Scheduler, coerce_params, create_run, execute
    from ork_core.workflow import load_workflow

    with _errors(env):
        project = env.project(workflow.parent if str(workflow.parent) else Path.cwd())
        compiled = load_workflow(workflow, project)
        run_params = coerce_params(compiled, _parse_params(params))
        storage = env.storage(project)
        run_id = create_run(storage, compiled, run_params, claim=True)
        started.append(run_id)
    click.echo(f"run {run_id}")
    reporter = _reporter(quiet)
    scheduler = Scheduler(
        project=project, plugins=env.plugins, storage=storage, workflow=compiled, run_id=run_id,
        params=run_params, reporter=reporter, max_concurrency=concurrency,
    )
    with _errors(env):
        result = _execute(execute, scheduler, run_id)
    _finish(env, storage, result, reporter)


def _stop_on_signals(run_id: list[str]) -> None:
    """Until the run loop takes the signals over, SIGINT/SIGTERM/SIGHUP exit soon, resumably.

    No task of this ork has started then, and every state change is committed before it is
    acted on, so exiting is safe once the processes a killed ork left for this run (a resume
    ends them before it starts anything) are ended; the exit code is the loop's, 128 + it.
    """
    import signal

    def stop(signum: int, frame: object) -> None:
        hint = f"; the run can continue with: ork resume {run_id[0]}" if run_id else ""
        click.echo(f"\nstopped by {signal.Signals(signum).name}{hint}", err=True)
        if run_id:  # a resume may have been ending what a killed ork left: finish that first
            from ork_core.proctree import end_group, run_processes

            for pgid in {pgid for _, pgid in (run_processes(run_id[0]) or {}).values()}:
                end_group(pgid)
        from ork_core.errors import StopSignal

        raise StopSignal(128 + signum)  # not sys.exit: a plugin import it interrupts must not take it for its own

    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # called in-process from another thread (tests): signals are not ours to take
    previous = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            previous[getattr(signal, name)] = signal.signal(getattr(signal, name), stop)

    def restore() -> None:  # the command ran in-process (tests): give the caller its handlers back
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)

    click.get_current_context().call_on_close(restore)


def _execute(execute: Any, scheduler: Any, run_id: str, **kwargs: Any) -> Any:
    """Run to the end; a signal stops ork resumably and exits 128 + its number (130 for Ctrl-C)."""
    try:
        result = execute(scheduler, **kwargs)
    except KeyboardInterrupt:
        click.echo(f"\nstopped; the run can continue with: ork resume {run_id}", err=True)
        sys.exit(130)
    _stop_on_signals([] if result.status != "stopped" else [run_id])  # the loop gave the signals back
    if result.status == "stopped":
        import signal

        name = signal.Signals(result.signal).name if result.signal else "a signal"
        for error in result.errors:
            click.echo(f"warning: {error}", err=True)
        scheduler.storage.close()
        click.echo(f"\nstopped by {name}; the run can continue with: ork resume {run_id}", err=True)
        sys.exit(128 + (result.signal or 2))
    return result


def _finish(env: Env, storage: Any, result: Any, reporter: Any) -> None:
    reporter.summary(storage.get_run(result.run_id, excerpt=SUMMARY_ERROR))
    for error in result.errors:
        _echo(f"warning: {error}", err=True)
    storage.close()
    sys.exit(0 if result.status == "success" else 1)


def _latest_resumable(storage: Any) -> str:
    """The newest run that started and did not finish: a queued run (`ork trigger`) is `ork scheduler`'s to start."""
    from ork_core.storage.base import QUEUED

    unfinished = storage.list_runs(1_000, unfinished=True)
    for record in unfinished:
        if record.status != QUEUED:
            return str(record.id)
    if unfinished:
        _fail(f"no interrupted run to resume; {len(unfinished)} run(s) are queued for `ork scheduler` "
              f"(`ork resume {unfinished[0].id}` would run the newest here)", 1)
    _fail("no unfinished run to resume", 1)


@main.command()
@click.argument("run_id", required=False)
@click.option("--concurrency", type=click.IntRange(min=1))
@click.option("--force", is_flag=True, help="Resume even if the recorded process still seems alive.")
@click.option("--quiet", "-q", is_flag=True)
@pass_env
def resume(env: Env, run_id: str | None, concurrency: int | None, force: bool, quiet: bool) -> None:
    """Continue a run whose process died (default: the latest unfinished run)."""
    started: list[str] = [run_id] if run_id else []
    _stop_on_signals(started)  # first: the imports below take a while
    from ork_core.scheduler import execute, resume_scheduler

    with _errors(env):
        project = env.project()
        storage = env.storage(project)
        if run_id is None:
            run_id = _latest_resumable(storage)
            started.append(run_id)
        reporter = _reporter(quiet)
        scheduler = resume_scheduler(
            project=project, plugins=env.plugins, storage=storage, run_id=run_id, reporter=reporter,
            max_concurrency=concurrency, force=force,
        )
    click.echo(f"run {run_id} (resumed)")
    with _errors(env):
        result = _execute(execute, scheduler, run_id, resumed=True)
    _finish(env, storage, result, reporter)


# --- inspection ------------------------------------------------------------------------------------


SHOWN_OUTPUT = 120
"""Characters of an output's JSON that `ork runs show` prints (the rest is in ``--json``)."""
SHOWN_ERROR = 2000
"""Characters of an error that `ork runs show` prints."""
SUMMARY_ERROR = 500
"""Characters of an error read for the summary at the end of `ork run` (it prints the first line)."""


def _ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


def _dur(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else "-"


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=20, show_default=True)
@pass_env
@click.pass_context
def runs(ctx: click.Context, env: Env, as_json: bool, limit: int) -> None:
    """List recent runs."""
    if ctx.invoked_subcommand is not None:
        return
    with _errors(env):
        records = env.storage(env.project()).list_runs(limit)
    if as_json:
        _echo(json.dumps([_run_json(r) for r in records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "workflow", "status", "trigger", "logical date", "started", "duration")
    for r in records:
        table.add_row(
            cell(r.id), cell(r.workflow_name), cell(r.status, _style(r.status)), cell(r.origin.trigger),
            cell(r.origin.logical_date or "-"), _ts(r.started_at), _dur(r.duration),
        )
    Console().print(table)


def _run_json(r: Any, tasks: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": r.id,
        "workflow": r.workflow_name,
        "workflow_hash": r.workflow_hash,
        "workflow_file": r.workflow_file,
        "params": r.params,
        "status": r.status,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "trigger": r.origin.trigger,
        "schedule": r.origin.schedule,
        "logical_date": r.origin.logical_date,
        "interval_start": r.origin.interval_start,
        "interval_end": r.origin.interval_end,
        "cancel_requested": r.cancel_requested,
    }
    if tasks:
        data["tasks"] = [
            {
                "name": t.name,
                "executor": t.executor,
                "status": t.status,
                "attempts": t.attempt,
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "duration_s": t.duration,
                "output": t.output,
                "error": t.error,
                "external_id": t.external_id,
                "link": t.link,
            }
            for t in r.tasks.values()
        ]
    return data


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@pass_env
def runs_show(env: Env, run_id: str, as_json: bool) -> None:
    """Every task of a run with status, attempts, timings, output and error."""
    with _errors(env):
        storage = env.storage(env.project())
        if as_json:
            _echo(json.dumps(_run_json(storage.get_run(run_id), tasks=True), indent=2))
            return
        # the table shows the start of each output: read only that much from the database
        record = storage.get_run(run_id, excerpt=max(SHOWN_OUTPUT + 1, SHOWN_ERROR + 1))
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        line(f"run {record.id}  workflow {record.workflow_name}  ", (record.status, _style(record.status)), f"  params {record.params}")
    )
    o = record.origin
    if o.trigger != "manual" or o.logical_date:
        interval = f"  interval {o.interval_start} → {o.interval_end}" if o.interval_start else ""
        console.print(line(f"trigger {o.trigger}" + (f" (schedule {o.schedule})" if o.schedule else "")
                           + f"  logical date {o.logical_date}{interval}"))
    table = Table("task", "status", "attempts", "started", "duration", "output / error", show_lines=False)
    for t in record.tasks.values():
        if t.error:
            detail = t.error if len(t.error) <= SHOWN_ERROR else t.error[:SHOWN_ERROR] + "…"
        elif t.output_excerpt is not None:
            detail = t.output_excerpt[:SHOWN_OUTPUT]
        else:
            detail = ""
        table.add_row(
            cell(t.name), cell(t.status, _style(t.status)), str(t.attempt), _ts(t.started_at), _dur(t.duration), cell(detail)
        )
    console.print(table)


@main.command()
@click.argument("run_id")
@click.option("--task", help="Only this task's lines.")
@pass_env
def logs(env: Env, run_id: str, task: str | None) -> None:
    """Print the log lines of a run (or of one task)."""
    with _errors(env):
        storage = env.storage(env.project())
        record = storage.get_run(run_id)
        if task is not None and task not in record.tasks:
            from ork_core.yamlfile import suggest

            _fail(f"run {run_id} has no task {task!r}{suggest(task, record.tasks)}", 1)
        for entry in storage.logs(run_id, task):
            stamp = time.strftime("%H:%M:%S", time.localtime(entry.ts))
            _echo(f"{stamp} {entry.task}#{entry.attempt} {entry.stream if entry.stream != 'log' else entry.level}: {entry.line}")


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@pass_env
def metrics(env: Env, run_id: str, as_json: bool) -> None:
    """Print the metrics recorded by a run's tasks."""
    with _errors(env):
        storage = env.storage(env.project())
        storage.get_run(run_id)
        rows = storage.metrics(run_id)
    if as_json:
        _echo(json.dumps([{"task": m.task, "attempt": m.attempt, "ts": m.ts, "name": m.name, "value": m.value, "labels": m.labels} for m in rows], indent=2))
        return
    for m in rows:
        labels = ",".join(f"{k}={v}" for k, v in m.labels.items())
        _echo(f"{m.task}#{m.attempt} {m.name}={m.value:g}{' {' + labels + '}' if labels else ''}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_env
def jobs(env: Env, as_json: bool) -> None:
    """Every external job ork is waiting on (deferred tasks), across runs."""
    with _errors(env):
        rows = env.storage(env.project()).deferred_tasks()
    data = [
        {
            "run": t.run_id,
            "task": t.name,
            "executor": t.executor,
            "tracker": t.tracker,
            "external_id": t.external_id,
            "link": t.link,
            "deferred_since": t.deferred_at,
            "last_poll": t.last_poll_at,
            "last_error": t.last_poll_error,
            "poll_failures": t.poll_failures,
        }
        for t in rows
    ]
    if as_json:
        _echo(json.dumps(data, indent=2))
        return
    if not data:
        click.echo("no deferred jobs")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "task", "executor", "external id", "deferred since", "last poll", "last error", "link")
    for d in data:
        table.add_row(
            cell(d["run"]), cell(d["task"]), cell(d["executor"]), cell(d["external_id"] or "-"), _ts(d["deferred_since"]),
            _ts(d["last_poll"]), cell(d["last_error"] or ""), cell(d["link"] or ""),
        )
    Console().print(table)


# --- serve -------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (reads are public on loopback only).")
@click.option("--port", default=8642, show_default=True, type=click.IntRange(0, 65535))
@pass_env
def serve(env: Env, host: str, port: int) -> None:
    """Serve the HTTP API and the web pages on this project's state database (needs ork-core[web])."""
    import os

    from ork_core import web

    with _errors(env):
        web.require()
        project = env.project()
        token, generated = web.api_token(dict(os.environ))
        config = web.build_config(
            project=project, plugins=env.plugins, storage=env.storage(project), token=token,
            public_reads=web.is_loopback(host), executor_rows=lambda: executor_rows(env, project),
        )
    if generated:  # printed as is: it is this server's own, not a secret from the configuration
        click.echo(f"API token for actions (set ORK_API_TOKEN to choose one): {token}")
    from ork_core.secrets import register

    register(token)  # from now on masked wherever this process shows or stores text
    web.serve(config, host, port, _echo)


# --- new -------------------------------------------------------------------------------------


@main.group()
def new() -> None:
    """Start a new plugin package from ork's template."""


@new.command("executor")
@click.argument("name")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Where to create the ork-executor-NAME folder.")
@click.option("--description", help="One line saying what the executor runs.")
@click.option("--author", help="Author name (default: git config user.name).")
@click.option("--email", help="Author email (default: git config user.email).")
@click.option("--kind", type=click.Choice(["sync", "deferred"]),
              help="sync: run() does the work; deferred: run() submits a job that a tracker polls.")
@click.option("--template", metavar="PATH_OR_URL", envvar="ORK_EXECUTOR_TEMPLATE",
              help="Another cookiecutter-executor template (default: the one shipped with ork).")
@click.option("--no-input", is_flag=True, help="Ask nothing: use the defaults for values not given.")
@pass_env
def new_executor(
    env: Env, name: str, output_dir: Path, description: str | None, author: str | None, email: str | None,
    kind: str | None, template: str | None, no_input: bool,
) -> None:
    """Create ork-executor-NAME: one executor, its tests (with ork's conformance kit), README and CI.

    Asks for the values not given when run in a terminal; --no-input never asks.
    """
    from ork_core import scaffold
    from ork_core.scaffold import ExecutorAnswers, check_executor_name, render_executor

    with _errors(env):
        check_executor_name(name)
        answers = ExecutorAnswers.defaults(name)
        ask = not no_input and scaffold.stdin_is_terminal()

        def value(given: str | None, prompt: str, default: str, **kw: Any) -> str:
            if given is not None:
                return given
            return str(click.prompt(prompt, default=default, **kw)) if ask else default

        answers = ExecutorAnswers(
            name=name,
            description=value(description, "Description", answers.description),
            author_name=value(author, "Author", answers.author_name),
            author_email=value(email, "Email", answers.author_email),
            kind=value(kind, "Kind", answers.kind, type=click.Choice(["sync", "deferred"])),
        )
        created = render_executor(answers, output_dir, template=template)
    click.echo(f"created {created}")
    click.echo("next:")
    click.echo(f"  cd {created}")
    click.echo("  pip install -e '.[test]'")
    click.echo("  pytest                     # the conformance kit, and `ork executors` finding the plugin")
    click.echo(f"  ork executors show {name}")
from ork_core import cli_schedules  # noqa: E402,F401  (registers the schedule commands on main)
from ork_core import cli_workers  # noqa: E402,F401  (registers `ork worker` and `ork workers` on main)
