"""Workflow validation: every error names the file, the line and what would be valid."""

from __future__ import annotations

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
            "wf.yaml:6: tasks.a.retries: Input should be a valid integer",
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
    ],
)
def test_validation_errors(cli: Cli, project: Path, text: str, expected: str) -> None:
    assert expected in check(cli, project, text)


def test_all_problems_are_reported_at_once(cli: Cli, project: Path) -> None:
    err = check(cli, project, "name: w\ntasks:\n  a:\n    depends_on: [x]\n    retries: x\n  b:\n    depends_on: [y]\n")
    assert "tasks.a.retries" in err and "tasks.b.depends_on[0]" in err


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
