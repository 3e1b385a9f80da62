"""``ork bigquery``: BigQuery tools on top of ork's CLI.

``ork bigquery estimate WORKFLOW`` renders every BigQuery task of a workflow exactly as a
run would and asks BigQuery for a dry run of each: what it would process and cost. Nothing
runs, no job is created, ork's state database is not touched. A dry run also validates the
SQL, so this doubles as a pre-flight check before a long workflow.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import BaseModel, ValidationError

from ork import Context, OrkError, TaskError
from ork_core.cli import Env
from ork_core.context import MemorySink, Metrics, TaskLogger
from ork_executor_bigquery.executor import BigQueryExecutor, estimated_cost
from ork_executor_bigquery.models import BigQueryConfig, BigQueryOutput

__all__ = ["bigquery", "estimate"]


@dataclass
class Estimate:
    """One task's line in the report."""

    task: str
    executor: str
    bytes_processed: int | None = None
    estimated_cost_usd: float | None = None
    error: str | None = None


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors(env: Env) -> Iterator[None]:
    try:
        yield
    except OrkError as exc:
        if env.debug:
            traceback.print_exc()
        _fail(str(exc))


def _env() -> Env:
    env = click.get_current_context().find_object(Env)
    return env if env is not None else Env(False, None)


def human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _placeholder(model: type[BaseModel] | None) -> dict[str, Any]:
    """Stand-in output of a task that has not run: zero values of its declared fields."""
    if model is None:
        return {}
    zeros: dict[Any, Any] = {int: 0, float: 0.0, str: "", bool: False}
    return {name: zeros.get(field.annotation) for name, field in model.model_fields.items()}


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--param {item!r}: expected NAME=VALUE")
        parsed[key] = value
    return parsed


@click.group()
def bigquery() -> None:
    """BigQuery tools: estimate what a workflow's queries would process and cost."""


@bigquery.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A run parameter (repeatable).")
@click.option(
    "--executor",
    "extra_executors",
    multiple=True,
    metavar="NAME",
    help="Also estimate tasks of this ork.yaml executor, e.g. a project's own BigQuery executor "
    "with the same config (project, location, cost_per_tb). Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def estimate(workflow: Path, params: tuple[str, ...], extra_executors: tuple[str, ...], as_json: bool) -> None:
    """Dry-run every BigQuery task of WORKFLOW: bytes each would process and its estimated cost.

    Upstream outputs a template uses are not known before a run; they are zeros here
    (bytes_processed of an upstream BigQuery task is its own estimate).
    """
    from ork_core.scheduler import coerce_params
    from ork_core.workflow import load_workflow

    env = _env()
    with _errors(env):
        project = env.project(workflow.parent if str(workflow.parent) else Path.cwd())
        compiled = load_workflow(workflow, project)
        run_params = coerce_params(compiled, _parse_params(params))
        unknown = [name for name in extra_executors if name not in project.settings.executors]
        if unknown:
            _fail(f"--executor {', '.join(unknown)}: not an executor in {project.label}")
    executors: dict[str, BigQueryExecutor] = {}
    estimates: list[Estimate] = []
    outputs: dict[str, Any] = {}
    try:
        for name in compiled.order:
            spec = compiled.tasks[name]
            with _errors(env):
                resolved = project.resolve(spec.executor)
            if not (issubclass(resolved.spec.cls, BigQueryExecutor) or spec.executor in extra_executors):
                outputs[name] = _placeholder(resolved.spec.output_model)
                continue
            runner = executors.get(spec.executor)
            if runner is None:
                runner = BigQueryExecutor(_bigquery_config(resolved.config, spec.executor, project.label))
                executors[spec.executor] = runner
            row = Estimate(name, spec.executor)
            upstream = {d: outputs[d] for d in spec.depends_on if d in outputs}
            try:
                row.bytes_processed = _dry_run(runner, compiled, project.dir, name, run_params, upstream, project.path_roots)
                row.estimated_cost_usd = estimated_cost(row.bytes_processed, runner.config.cost_per_tb)
            except TaskError as exc:
                row.error = str(exc)
            estimates.append(row)
            outputs[name] = BigQueryOutput(
                rows_affected=0, bytes_processed=row.bytes_processed or 0,
                estimated_cost_usd=row.estimated_cost_usd or 0.0, job_id="", console_link="", dry_run=True,
            ).model_dump(mode="json")
    finally:
        for runner in executors.values():
            runner.close()
    _report(compiled.name, estimates, as_json)
    sys.exit(1 if any(e.error for e in estimates) else 0)


def _bigquery_config(config: BaseModel, executor: str, label: str) -> BigQueryConfig:
    if isinstance(config, BigQueryConfig):
        return config
    try:
        return BigQueryConfig.model_validate(config.model_dump())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        _fail(f"{label}: executors.{executor}.config cannot be used as a BigQuery config: {problems}")


def _dry_run(
    runner: BigQueryExecutor,
    workflow: Any,
    project_dir: Path,
    task: str,
    params: Mapping[str, Any],
    upstream: Mapping[str, Any],
    allowed_path_roots: tuple[Path, ...] = (),
) -> int:
    from google.api_core import exceptions as api_exceptions

    from ork_executor_bigquery import bq
    from ork_executor_bigquery.executor import describe_api_error

    spec = workflow.tasks[task]
    sink = MemorySink()
    ctx = Context(
        task_name=task,
        workflow_name=workflow.name,
        run_id="estimate",
        attempt=0,
        log=TaskLogger(sink, "estimate", task, 0),
        metrics=Metrics(sink, "estimate", task, 0),
        params=dict(params),
        task_config=spec.task_config,
        config_file=spec.config_file,
        workflow_dir=workflow.dir,
        project_dir=project_dir,
        allowed_path_roots=allowed_path_roots,
        executor_name=spec.executor,
    )
    query = runner.prepare(spec.config_file, ctx, upstream)
    config = runner.config
    try:
        return bq.dry_run_bytes(
            runner.client(),
            query.sql,
            location=config.location,
            query_parameters=query.parameters,
            default_dataset=config.default_dataset,
        )
    except api_exceptions.GoogleAPICallError as exc:
        raise TaskError(describe_api_error(exc, "(dry run)", query.sql, query.template)) from None
    except Exception as exc:
        if bq.is_transient(exc):
            raise TaskError(f"BigQuery could not be reached: {exc}") from None
        raise


def _report(workflow: str, estimates: list[Estimate], as_json: bool) -> None:
    total_bytes = sum(e.bytes_processed or 0 for e in estimates)
    total_cost = round(sum(e.estimated_cost_usd or 0.0 for e in estimates), 4)
    if as_json:
        data = {
            "workflow": workflow,
            "tasks": [asdict(e) for e in estimates],
            "total_bytes_processed": total_bytes,
            "total_estimated_cost_usd": total_cost,
        }
        click.echo(json.dumps(data, indent=2))
        return
    if not estimates:
        click.echo(
            f"workflow {workflow} has no tasks on the bigquery executor type; for a project's own "
            "BigQuery executor, name it: --executor NAME"
        )
        return
    width = max(len("task"), *(len(e.task) for e in estimates))
    click.echo(f"{'task':<{width}}  {'bytes processed':>24}  {'est. cost':>10}")
    for e in estimates:
        if e.error is not None:
            click.echo(f"{e.task:<{width}}  {'error':>24}")
            for line in e.error.splitlines():
                click.echo(f"    {line}")
            continue
        assert e.bytes_processed is not None and e.estimated_cost_usd is not None
        shown = f"{e.bytes_processed:,} ({human_bytes(e.bytes_processed)})"
        click.echo(f"{e.task:<{width}}  {shown:>24}  {'$' + format(e.estimated_cost_usd, '.4f'):>10}")
    shown = f"{total_bytes:,} ({human_bytes(total_bytes)})"
    click.echo(f"{'total':<{width}}  {shown:>24}  {'$' + format(total_cost, '.4f'):>10}")
