"""A run's logical date and interval as tasks see them: ``ctx``, ``{run: …}`` bindings, templates."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from orkhelpers import run_in_process, write
from ork_core.bindings import resolve
from ork_core.errors import TaskError, WorkflowError
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.schedules import Schedule
from ork_core.storage.base import RunOrigin
from ork_core.templating import ork_variables, render
from ork_core.workflow import load_workflow

TASKS = '''
def from_ctx(ctx) -> dict:
    return {"logical_date": ctx.logical_date, "start": ctx.interval_start, "end": ctx.interval_end, "trigger": ctx.trigger}

def bound(day: str, start: "str | None" = None, end: "str | None" = None, trigger: str = "", run_id: str = "") -> dict:
    return {"day": day, "start": start, "end": end, "trigger": trigger, "run_id": run_id}
'''

WORKFLOW = """
name: dated
schedule: {cron: "0 6 * * *", timezone: Europe/Berlin}
tasks:
  ctx_task: {file: tasks.py, function: from_ctx}
  bound_task:
    file: tasks.py
    function: bound
    inputs:
      day: {run: logical_date}
      start: {run: interval_start}
      end: {run: interval_end}
      trigger: {run: trigger}
      run_id: {run: run_id}
"""

TICK = Schedule("0", "0 6 * * *", timezone="Europe/Berlin").tick(
    int(datetime.fromisoformat("2026-12-03T06:00:00+01:00").timestamp())
)
ORIGIN = RunOrigin(
    trigger="schedule", schedule="0", logical_ts=TICK.ts, logical_date=TICK.logical_date,
    interval_start=TICK.interval_start, interval_end=TICK.interval_end,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "tasks.py", TASKS)
    write(tmp_path / "wf.yaml", WORKFLOW)
    return tmp_path


def test_a_tick_run_gives_its_tick_to_ctx_and_to_run_bindings(folder: Path) -> None:
    result, run = run_in_process(folder, folder / "wf.yaml", origin=ORIGIN)
    assert run.status == "success", result
    assert run.tasks["ctx_task"].output == {
        "logical_date": "2026-12-03T06:00:00+01:00", "start": "2026-12-02T06:00:00+01:00",
        "end": "2026-12-03T06:00:00+01:00", "trigger": "schedule",
    }
    assert run.tasks["bound_task"].output == {
        "day": "2026-12-03T06:00:00+01:00", "start": "2026-12-02T06:00:00+01:00",
        "end": "2026-12-03T06:00:00+01:00", "trigger": "schedule", "run_id": run.id,
    }


def test_a_run_with_no_tick_has_its_creation_time_and_no_interval(folder: Path) -> None:
    before = time.time()
    result, run = run_in_process(folder, folder / "wf.yaml")
    assert run.status == "success", result
    out = run.tasks["ctx_task"].output
    assert (out["start"], out["end"], out["trigger"]) == (None, None, "manual")
    when = datetime.fromisoformat(out["logical_date"])
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert when.timestamp() == pytest.approx(run.created_at, abs=1e-3)
    assert before - 1 <= when.timestamp() <= time.time()
    assert run.tasks["bound_task"].output["day"] == out["logical_date"]


def test_an_isolated_task_sees_the_logical_date_too(folder: Path) -> None:
    write(folder / "iso.yaml", "name: iso\ntasks:\n  t: {file: tasks.py, function: from_ctx, isolation: process}\n")
    result, run = run_in_process(folder, folder / "iso.yaml", origin=ORIGIN)
    assert run.status == "success", result
    assert run.tasks["t"].output["start"] == "2026-12-02T06:00:00+01:00"


def test_an_unknown_run_value_is_a_validation_error(folder: Path) -> None:
    path = write(folder / "bad.yaml", "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: bound\n    inputs:\n      day: {run: logical_dat}\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, Project.load(folder, build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})))
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (7, "tasks.a.inputs.day")
    assert problem.message == (
        "unknown run value 'logical_dat' (did you mean 'logical_date'?); "
        "valid: logical_date, interval_start, interval_end, trigger, run_id"
    )


def test_resolve_run_bindings() -> None:
    run = {"logical_date": "d", "interval_start": "s", "interval_end": "e", "trigger": "manual", "run_id": "r"}
    assert resolve({"a": [{"run": "logical_date"}], "b": {"run": "run_id"}}, {}, {}, run) == {"a": ["d"], "b": "r"}
    with pytest.raises(TaskError, match="this executor does not resolve run values"):
        resolve({"run": "logical_date"}, {}, {})
    with pytest.raises(TaskError, match="no such run value; valid: logical_date"):
        resolve({"run": "nope"}, {}, {}, run)


def test_templates_get_the_run_under_ork() -> None:
    ctx = SimpleNamespace(
        run_id="r1", task_name="t", workflow_name="w", try_number=1, idempotency_key="k", trigger="schedule",
        logical_date=ORIGIN.logical_date, interval_start=ORIGIN.interval_start, interval_end=ORIGIN.interval_end,
    )
    text = render("{{ ork.interval_start[:10] }}..{{ ork.interval_end[:10] }} {{ ork.trigger }}", {"ork": ork_variables(ctx)})  # type: ignore[arg-type]
    assert text == "2026-12-02..2026-12-03 schedule"
