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
