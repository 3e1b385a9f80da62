"""The example a newcomer runs first must keep working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from orkhelpers import REPO, Cli


def test_elt_example_runs(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "elt"
    shutil.copytree(REPO / "examples" / "elt", folder, ignore=shutil.ignore_patterns(".ork", "out"))
    result = cli("run", "workflow.yaml", cwd=folder)
    assert result.code == 0, result.out + result.err
    run_id = result.out.splitlines()[0].split()[1]
    shown = json.loads(cli("runs", "show", run_id, "--json", cwd=folder).out)
    tasks = {t["name"]: t for t in shown["tasks"]}
    assert {t["status"] for t in tasks.values()} == {"success"}
    assert tasks["fetch_rates"]["attempts"] == 2
    assert tasks["revenue"]["output"] == {"PT": 162.5, "US": 349.6, "DE": 99.99, "GB": 64.47}
    assert json.loads((folder / "out" / "europe.json").read_text()) == {"PT": 162.5, "DE": 99.99, "GB": 64.47}
    logs = cli("logs", run_id, "--task", "extract_orders", cwd=folder).out
    assert "read 8 rows from data/orders.csv" in logs


def test_scheduled_example_runs_now_and_for_a_tick(cli: Cli, tmp_path: Path) -> None:
    from datetime import datetime

    from orkhelpers import run_in_process
    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.storage.base import RunOrigin
    from ork_core.workflow import load_workflow

    folder = tmp_path / "scheduled"
    shutil.copytree(REPO / "examples" / "scheduled", folder, ignore=shutil.ignore_patterns(".ork", "out"))
    result = cli("run", "workflow.yaml", cwd=folder)  # no tick: the last complete hour
    assert result.code == 0, result.out + result.err
    (manual,) = (folder / "out" / "views").iterdir()
    assert json.loads((manual / "part.json").read_text())["trigger"] == "manual"

    compiled = load_workflow(folder / "workflow.yaml", Project.load(folder, build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})))
    (schedule,) = compiled.schedules
    assert (schedule.key, schedule.cron, schedule.catchup) == ("hourly", "@hourly", False)
    tick = schedule.tick(int(datetime.fromisoformat("2026-01-01T02:00:00+01:00").timestamp()))
    origin = RunOrigin(
        trigger="schedule", schedule="hourly", logical_ts=tick.ts, logical_date=tick.logical_date,
        interval_start=tick.interval_start, interval_end=tick.interval_end,
    )
    _, run = run_in_process(folder, folder / "workflow.yaml", origin=origin)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert run.tasks["load"].output == {"path": "out/views/hour=2026-01-01T01+0100/part.json", "views": 3}
    part = json.loads((folder / "out" / "views" / "hour=2026-01-01T01+0100" / "part.json").read_text())
    assert part == {
        "start": "2026-01-01T01:00:00+01:00", "end": "2026-01-01T02:00:00+01:00", "trigger": "schedule",
        "pages": {"/": 1, "/docs": 2},
    }
