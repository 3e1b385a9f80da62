"""ork finds the installed plugin: ``ork executors`` lists it, and the README's workflow runs.

These run the real ``ork`` command, so they prove the entry point in pyproject.toml is
wired, not merely that the module imports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
{%- if cookiecutter.kind == "deferred" %}

from job_server import JobServer
{%- endif %}

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_ork_lists_the_executor(ork: Path, ork_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([str(ork), "executors", "--json"], cwd=tmp_path, env=ork_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert "{{ cookiecutter.executor_name }}" in rows, f"ork did not discover the executor; it lists {sorted(rows)}"
    row = rows["{{ cookiecutter.executor_name }}"]
    assert row["status"] == "ok", row["error"]
    assert row["distribution"] == "{{ cookiecutter.__project_slug }}"
    assert row["version"] == version("{{ cookiecutter.__project_slug }}")
    assert row["target"] == "{{ cookiecutter.__package_name }}.executor:{{ cookiecutter.__class_prefix }}Executor"


def test_the_readme_workflow_runs(ork: Path, ork_env: dict[str, str], tmp_path: Path{% if cookiecutter.kind == "deferred" %}, job_server: JobServer{% endif %}) -> None:
    project = shutil.copytree(EXAMPLES, tmp_path / "examples")
{%- if cookiecutter.kind == "deferred" %}
    ork_env["{{ cookiecutter.__env_prefix }}_URL"] = job_server.url
{%- endif %}
    proc = subprocess.run([str(ork), "run", "workflow.yaml"], cwd=project, env=ork_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.split()[1]
    shown = subprocess.run([str(ork), "runs", "show", run_id, "--json"], cwd=project, env=ork_env, capture_output=True, text=True)
    tasks = {task["name"]: task for task in json.loads(shown.stdout)["tasks"]}
    assert {name: task["status"] for name, task in tasks.items()} == {"first": "success", "second": "success"}
