"""Workflow validation: every error names the file, the line and what would be valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orkhelpers import Cli, write
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.workflow import load_workflow

TASKS = "def f(x: int = 0) -> int:\n    return x\n"


def check(cli: Cli, project: Path, text: str) -> str:
    write(project / "tasks.py", TASKS)
    wf = write(project / "wf.yaml", text)
    result = cli("validate", str(wf), cwd=project)
    assert result.code == 1, result.out
    assert "Traceback" not in result.err
    return result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    depend_on: [b]\n",
            "wf.yaml:6: tasks.a.depend_on: unknown key 'depend_on' (did you mean 'depends_on'?)",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    depends_on: [nope]\n",
            "wf.yaml:6: tasks.a.depends_on[0]: depends on 'nope', which is not a task in this workflow",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    depends_on: [a]\n",
            "tasks.a.depends_on[0]: task 'a' depends on itself",
        ),
        (
            "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  b:\n    file: tasks.py\n    function: f\n    depends_on: [a, a]\n",
            "wf.yaml:7: tasks.b.depends_on[1]: 'a' is listed twice in depends_on",
        ),
        (
            "name: w\ntasks:\n  a: {file: tasks.py, function: f, depends_on: [c]}\n  b: {file: tasks.py, function: f, depends_on: [a]}\n"
            "  c: {file: tasks.py, function: f, depends_on: [b]}\n",
            "dependency cycle: a -> c -> b -> a",
        ),
        (
            "name: w\ntasks:\n  a:\n    executor: bigqeury\n",
            "wf.yaml:4: tasks.a.executor: executor 'bigqeury' is not configured in ork.yaml and is not a registered type",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    retries: many\n",
            "wf.yaml:6: tasks.a.retries: expected an integer, got the string 'many'",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    timeout: -1\n",
            "tasks.a.timeout: Input should be greater than 0",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    on_failure: always\n",
            "tasks.a.on_failure: Input should be 'run' or 'skip'",
        ),
        ("name: w\ntasks: {}\n", "wf.yaml:2: tasks: Dictionary should have at least 1 item"),
        ("tasks:\n  a: {file: tasks.py, function: f}\n", "wf.yaml:1: name: required field is missing"),
        ("name: w\ntask:\n  a: {}\n", "unknown key 'task' (did you mean 'tasks'?)"),
        ("", "the file is empty; expected a mapping with 'name' and 'tasks'"),
        ("name: w\ntasks:\n  a: [1]\n", "wf.yaml:3: tasks.a: a task must be a mapping"),
        ("name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  a: {file: tasks.py, function: f}\n", "wf.yaml:4: tasks.a: duplicate key (first defined on line 3)"),
        ("name: w\ntasks:\n  a: {file: tasks.py, function: f\n", "invalid YAML"),
        (
            "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  b:\n    file: tasks.py\n    function: f\n    inputs:\n      x: {ref: tasks.a.output}\n",
            "wf.yaml:8: tasks.b.inputs.x: ref to task 'a', which 'b' does not depend on; add it to depends_on",
        ),
        (
            "name: w\nparams: {day: '2026-01-01'}\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    inputs:\n      x: {param: dya}\n",
            "tasks.a.inputs.x: unknown run parameter 'dya' (did you mean 'day'?)",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    functon: f\n",
            "tasks.a.functon: unknown key 'functon' (did you mean 'function'?)",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    module: tasks\n    function: f\n",
            "give exactly one of 'module' (an importable module) or 'file' (a .py file)",
        ),
        (
            "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    config_file: missing.yaml\n",
            "wf.yaml:6: tasks.a.config_file: config file 'missing.yaml' not found",
        ),
        ("name: w\ntasks:\n  a:\n    retries: 1\n", "wf.yaml:3: tasks.a.function: required field is missing"),
    ],
)
def test_validation_errors(cli: Cli, project: Path, text: str, expected: str) -> None:
    assert expected in check(cli, project, text)


def test_all_problems_are_reported_at_once(cli: Cli, project: Path) -> None:
    err = check(cli, project, "name: w\ntasks:\n  a:\n    depends_on: [x]\n    retries: x\n  b:\n    depends_on: [y]\n")
    assert "tasks.a.retries" in err and "tasks.b.depends_on[0]" in err


def test_a_cycle_through_a_task_with_other_problems_is_reported_too(cli: Cli, project: Path) -> None:
    err = check(cli, project, "name: w\ntasks:\n  a:\n    executor: nope\n    depends_on: [b]\n  b:\n    file: tasks.py\n    function: f\n    depends_on: [a]\n")
    assert "wf.yaml:4: tasks.a.executor: executor 'nope'" in err
    assert "wf.yaml:5: tasks.a.depends_on: dependency cycle: a -> b -> a" in err


def test_unknown_executor_lists_available_ones(cli: Cli, project: Path) -> None:
    err = check(cli, project, "name: w\ntasks:\n  a:\n    executor: pyton\n")
    assert "did you mean 'python'?" in err and "available: python" in err


def test_valid_workflow_compiles_to_levels_and_a_stable_hash(project: Path) -> None:
    write(project / "tasks.py", TASKS)
    text = "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  b: {file: tasks.py, function: f, depends_on: [a]}\n  c: {file: tasks.py, function: f, depends_on: [a]}\n  d: {file: tasks.py, function: f, depends_on: [b, c]}\n"
    wf = write(project / "wf.yaml", text)
    proj = Project.load(project, build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}))
    compiled = load_workflow(wf, proj)
    assert compiled.levels == [["a"], ["b", "c"], ["d"]]
    assert compiled.order == ["a", "b", "c", "d"]
    assert compiled.tasks["a"].dependents == ["b", "c"]
    assert load_workflow(wf, proj).hash == compiled.hash
    wf.write_text(text.replace("[b, c]", "[c, b]"))
    assert load_workflow(wf, proj).hash != compiled.hash


def test_validate_ok_message(cli: Cli, project: Path) -> None:
    write(project / "tasks.py", TASKS)
    wf = write(project / "wf.yaml", "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n")
    result = cli("validate", str(wf), cwd=project)
    assert result.code == 0
    assert "1 task(s) in 1 level(s)" in result.out


EXECUTOR_WITH_TASK_KEYS = """
from pydantic import BaseModel, ConfigDict
from ork import Context, executor, load_task_config

class Config(BaseModel):
    pass

class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    method: str = "GET"

@executor(task_config=Task)
class Fetch:
    def __init__(self, config: Config) -> None:
        pass

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> dict[str, str]:
        task = load_task_config(Task, config_file, ctx)
        return {"url": task.url, "method": task.method}
"""


@pytest.fixture
def fetch_project(project: Path, fresh_modules: None) -> Path:
    write(project / "fetchers.py", EXECUTOR_WITH_TASK_KEYS)
    write(project / "ork.yaml", "executors:\n  fetch:\n    type: fetchers:Fetch\n")
    return project


def only_task(cli: Cli, project: Path) -> dict[str, object]:
    """The single task of the latest run, as `ork runs show --json` reports it."""
    (run,) = json.loads(cli("runs", "--json", "--limit", "1", cwd=project).out)
    (task,) = json.loads(cli("runs", "show", run["id"], "--json", cwd=project).out)["tasks"]
    return task  # type: ignore[no-any-return]


def test_a_required_task_key_missing_everywhere_is_a_validation_error(cli: Cli, fetch_project: Path) -> None:
    wf = write(fetch_project / "wf.yaml", "name: w\ntasks:\n  a:\n    executor: fetch\n")
    result = cli("validate", str(wf), cwd=fetch_project)
    assert result.code == 1
    assert "wf.yaml:3: tasks.a.url: required field is missing" in result.err


def test_task_keys_may_be_split_between_config_file_and_the_task(cli: Cli, fetch_project: Path) -> None:
    """A key the config_file gives is not missing; the inline keys are still checked."""
    write(fetch_project / "req.yaml", "url: http://127.0.0.1:9/x\n")
    wf = write(fetch_project / "wf.yaml", "name: w\ntasks:\n  a:\n    executor: fetch\n    config_file: req.yaml\n    method: POST\n")
    assert cli("validate", str(wf), cwd=fetch_project).code == 0
    assert cli("run", str(wf), cwd=fetch_project).code == 0
    assert only_task(cli, fetch_project)["output"] == {"url": "http://127.0.0.1:9/x", "method": "POST"}
    bad = write(fetch_project / "bad.yaml", "name: w\ntasks:\n  a:\n    executor: fetch\n    config_file: req.yaml\n    methd: POST\n")
    result = cli("validate", str(bad), cwd=fetch_project)
    assert result.code == 1
    assert "bad.yaml:6: tasks.a.methd: unknown key 'methd' (did you mean 'method'?)" in result.err


def test_a_key_missing_from_the_config_file_too_fails_the_task_naming_the_file(cli: Cli, fetch_project: Path) -> None:
    write(fetch_project / "req.yaml", "method: POST\n")
    wf = write(fetch_project / "wf.yaml", "name: w\ntasks:\n  a:\n    executor: fetch\n    config_file: req.yaml\n")
    assert cli("run", str(wf), cwd=fetch_project).code == 1
    task = only_task(cli, fetch_project)
    assert task["status"] == "failed"
    assert str(task["error"]).endswith("req.yaml:1: url: required field is missing"), task["error"]


def test_python_task_keys_missing_beside_a_config_file_are_named_by_validation(cli: Cli, project: Path) -> None:
    """A python task's config_file is the function's own: the executor's check() knows it cannot hold `function`."""
    write(project / "settings.yaml", "threshold: 3\n")
    wf = write(project / "wf.yaml", "name: w\ntasks:\n  a:\n    config_file: settings.yaml\n")
    result = cli("run", str(wf), cwd=project)
    assert result.code == 2
    assert "wf.yaml:3: tasks.a.function: required field is missing" in result.err, result.err
