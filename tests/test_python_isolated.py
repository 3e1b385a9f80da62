"""``isolation: process`` for the python executor: a real child interpreter per task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ork import WorkflowError
from ork.testing import run_task
from ork_core.proctree import group_members, signal_group

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

MODULE = '''
import os, subprocess, sys, time
from pathlib import Path

from ork import TaskError, TaskSkipped


def add(a: int, b: int, ctx) -> dict:
    print("hello from pid", os.getpid())
    print("to stderr", file=sys.stderr)
    ctx.log.info("adding %s and %s", a, b)
    ctx.metrics.record("sum", a + b, {"kind": "test"})
    return {"sum": a + b, "pid": os.getpid(), "parent": os.getppid(), "task": ctx.task_name}


def with_upstream(upstream, factor: int = 2):
    return upstream["up"]["n"] * factor


async def coro(x: int) -> int:
    return x + 1


def tree(marker: str):
    Path(marker).write_text(str(os.getpgrp()))
    subprocess.Popen(["sleep", "300"])
    time.sleep(300)


def boom():
    raise ValueError("bad value")


def refuse():
    raise TaskError("the input table is empty")


def skip():
    raise TaskSkipped("nothing to do today")


def crash():
    os._exit(3)


def wrong() -> int:
    return "not a number"

'''

PLAIN = '''
import importlib.util, sys


def where(n: int) -> dict:
    return {
        "prefix": sys.prefix,
        "executable": sys.executable,
        "n": n,
        "has_ork": importlib.util.find_spec("ork") is not None,
        "has_pydantic": importlib.util.find_spec("pydantic") is not None,
    }
'''


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "isofuncs.py").write_text(MODULE)
    (tmp_path / "plain.py").write_text(PLAIN)
    yield tmp_path
    marker = tmp_path / "pgid"
    if marker.exists():  # a failed test must not leave its tree behind
        signal_group(int(marker.read_text()), signal.SIGKILL)


def isolated(function: str, **keys: object) -> dict[str, object]:
    return {"module": "isofuncs", "function": function, "isolation": "process", **keys}


def test_runs_in_a_child_with_log_metrics_and_output(project: Path) -> None:
    result = run_task(
        "python", task=isolated("add", inputs={"a": {"const": 2}, "b": {"const": "3"}}), project_dir=project
    )
    assert result.ok, result.describe()
    assert result.output["sum"] == 5 and result.output["task"] == "task"
    assert result.output["pid"] != os.getpid() and result.output["parent"] == os.getpid()
    assert f"hello from pid {result.output['pid']}" in result.logs
    assert "to stderr" in result.logs and "adding 2 and 3" in result.logs
    assert ("sum", 5.0, {"kind": "test"}) in result.metrics


def test_upstream_and_async_functions(project: Path) -> None:
    result = run_task("python", task=isolated("with_upstream"), upstream={"up": {"n": 21}}, project_dir=project)
    assert result.ok and result.output == 42, result.describe()
    result = run_task("python", task=isolated("coro", inputs={"x": {"const": 1}}), project_dir=project)
    assert result.ok and result.output == 2, result.describe()


def test_timeout_ends_the_child_and_what_it_started(project: Path) -> None:
    marker = project / "pgid"
    result = run_task("python", task=isolated("tree", inputs={"marker": {"const": str(marker)}}), timeout=2.0,
                      project_dir=project)
    assert result.status == "failed" and "timed out" in (result.error or ""), result.describe()
    pgid = int(marker.read_text())
    assert group_members(pgid) == []


def test_cancel_ends_the_child(project: Path) -> None:
    marker = project / "pgid"
    result = run_task("python", task=isolated("tree", inputs={"marker": {"const": str(marker)}}), cancel_after=1.5,
                      project_dir=project)
    assert result.status == "cancelled", result.describe()
    assert group_members(int(marker.read_text())) == []


@pytest.mark.parametrize(
    ("function", "status", "message"),
    [
        ("boom", "failed", "isofuncs:boom raised ValueError: bad value"),
        ("refuse", "failed", "the input table is empty"),
        ("skip", "skipped", "nothing to do today"),
        ("crash", "failed", "exited with code 3 before returning a result"),
        ("wrong", "failed", "returned a value that does not match its annotation"),
    ],
)
def test_errors_cross_back_clearly(project: Path, function: str, status: str, message: str) -> None:
    result = run_task("python", task=isolated(function), project_dir=project)
    assert result.status == status, result.describe()
    assert message in (result.error or ""), result.describe()


def test_a_traceback_shows_the_task_code_only(project: Path) -> None:
    result = run_task("python", task=isolated("boom"), project_dir=project)
    text = result.log_text
    assert 'isofuncs.py", line' in text and "_isolated_child.py" not in text


def test_invalid_arguments_are_reported_by_name(project: Path) -> None:
    result = run_task("python", task=isolated("add", inputs={"a": {"const": "x"}, "b": {"const": 1}}),
                      project_dir=project)
    assert result.status == "failed" and "argument 'a' is invalid" in (result.error or ""), result.describe()
    result = run_task("python", task=isolated("add", inputs={"a": {"const": 1}}), project_dir=project)
    assert "needs argument(s) b" in (result.error or ""), result.describe()


def test_missing_module_function_and_interpreter(project: Path) -> None:
    # found by `ork validate` (and so before `ork run` starts anything), without importing
    with pytest.raises(WorkflowError, match="tasks.task.module: module 'no_such_mod' not found"):
        run_task("python", task={"module": "no_such_mod", "function": "f", "isolation": "process"}, project_dir=project)
    with pytest.raises(WorkflowError, match="tasks.task.function: isofuncs has no function 'nope'; it defines: add"):
        run_task("python", task=isolated("nope"), project_dir=project)
    result = run_task("python", task=isolated("add", python="envs/missing/bin/python"), project_dir=project)
    assert "python: 'envs/missing/bin/python' not found" in (result.error or ""), result.describe()


def test_another_virtual_environment(project: Path) -> None:
    """A venv without ork or pydantic: values cross as plain JSON."""
    venv = project / "otherenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    task = {"file": "plain.py", "function": "where", "isolation": "process", "python": "otherenv",
            "inputs": {"n": {"const": 7}}}
    result = run_task("python", task=task, project_dir=project)
    assert result.ok, result.describe()
    assert Path(result.output["prefix"]).resolve() == venv.resolve()
    assert result.output["executable"].startswith(str(venv))
    assert result.output["n"] == 7
    assert not result.output["has_ork"] and not result.output["has_pydantic"]


def test_executor_wide_isolation(project: Path) -> None:
    started = time.monotonic()
    result = run_task("python", config={"isolation": "process"},
                      task={"module": "isofuncs", "function": "add", "inputs": {"a": {"const": 1}, "b": {"const": 1}}},
                      project_dir=project)
    assert result.ok and result.output["pid"] != os.getpid(), result.describe()
    assert time.monotonic() - started < 30
