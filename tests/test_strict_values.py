"""Workflow and ork.yaml values are taken as written and bounded: `true` is not 1, nothing waits forever."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orkhelpers import Cli, write
from ork_core.workflow import CompiledTask

TASKS = "def f(x: int = 0) -> int:\n    return x\n"


def task(keys: str) -> str:
    return f"name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    {keys}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (task("retries: true"), "wf.yaml:6: tasks.a.retries: expected an integer, got true"),
        (task("retries: '3'"), "wf.yaml:6: tasks.a.retries: expected an integer, got the string '3'"),
        (task("retries: 2.5"), "wf.yaml:6: tasks.a.retries: expected an integer, got 2.5"),
        (task("retries: -1"), "tasks.a.retries: Input should be greater than or equal to 0"),
        (task("retries: 1000000000000000000000000"), "tasks.a.retries: Input should be less than or equal to 1000"),
        (task("retry_delay: false"), "wf.yaml:6: tasks.a.retry_delay: expected a number, got false"),
        (task("retry_delay: '5'"), "tasks.a.retry_delay: expected a number, got the string '5'"),
        (task("retry_delay: .inf"), "wf.yaml:6: tasks.a.retry_delay: .inf is not a finite number"),
        (task("retry_delay: 1e300"), "wf.yaml:6: tasks.a.retry_delay: Input should be less than or equal to 604800"),
        (task("retry_delay: 90000"), "tasks.a.retry_delay: retry_delay 90000 is more than max_retry_delay 86400"),
        (task("retry_backoff: 1e308"), "wf.yaml:6: tasks.a.retry_backoff: Input should be less than or equal to 100"),
        (task("retry_backoff: 0"), "tasks.a.retry_backoff: Input should be greater than 0"),
        (task("max_retry_delay: 1e9"), "tasks.a.max_retry_delay: Input should be less than or equal to 604800"),
        (task("timeout: .inf"), "wf.yaml:6: tasks.a.timeout: .inf is not a finite number"),
        (task("timeout: .nan"), "wf.yaml:6: tasks.a.timeout: .nan is not a finite number"),
        (task("timeout: 1e300"), "tasks.a.timeout: Input should be less than or equal to 2592000"),
        (task("timeout: yes"), "tasks.a.timeout: expected a number, got true"),
        (task("on_failure: true"), "tasks.a.on_failure: Input should be 'run' or 'skip'"),
        (task("env: {A: 1}"), "wf.yaml:6: tasks.a.env.A: expected a string, got 1"),
        (task("depends_on: b"), "tasks.a.depends_on: expected a list, got the string 'b'"),
        (task('env: {"A=B": x}'), "wf.yaml:6: tasks.a.env['A=B']: 'A=B' is not an environment variable name"),
        (task('env: {"": x}'), "wf.yaml:6: tasks.a.env['']: '' is not an environment variable name"),
        (task('env: {A: "x\\0y"}'), "wf.yaml:6: tasks.a.env.A: an environment variable cannot hold a NUL character"),
        ("name: w\nmax_concurrency: true\ntasks:\n  a: {file: tasks.py, function: f}\n", "wf.yaml:2: max_concurrency: expected an integer, got true"),
        ("name: w\nmax_concurrency: 0\ntasks:\n  a: {file: tasks.py, function: f}\n", "max_concurrency: Input should be greater than or equal to 1"),
        ("name: w\nmax_concurrency: 1000000000\ntasks:\n  a: {file: tasks.py, function: f}\n", "max_concurrency: Input should be less than or equal to 10000"),
        ("name: 5\ntasks:\n  a: {file: tasks.py, function: f}\n", "wf.yaml:1: name: expected a string, got 5"),
        ('name: "w\\n"\ntasks:\n  a: {file: tasks.py, function: f}\n', "wf.yaml:1: name: String should match pattern"),
        ('name: w\ntasks:\n  "abc\\n": {file: tasks.py, function: f}\n', "wf.yaml:3: tasks['abc\\n']: task name 'abc\\n' must start with a letter"),
        ('name: w\nparams: {"day\\n": 1, "a b": 2}\ntasks:\n  a: {file: tasks.py, function: f}\n', "wf.yaml:2: params['day\\n']: parameter name 'day\\n' must start"),
        ('name: w\nparams: {"a b": 2}\ntasks:\n  a: {file: tasks.py, function: f}\n', "wf.yaml:2: params['a b']: parameter name 'a b' must start"),
    ],
)
def test_values_are_strict_and_bounded(cli: Cli, project: Path, text: str, expected: str) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", text)
    for command, code in (("validate", 1), ("run", 2)):
        result = cli(command, "wf.yaml", cwd=project)
        assert result.code == code, (command, result.out, result.err)
        assert expected in result.err, result.err
        assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_concurrency: '4'\n", "ork.yaml:1: max_concurrency: expected an integer, got the string '4'"),
        ("max_concurrency: true\n", "ork.yaml:1: max_concurrency: expected an integer, got true"),
        ("max_concurrency: 100000000\n", "max_concurrency: Input should be less than or equal to 10000"),
        ("executors:\n  p: {type: python, max_concurrency: false}\n", "ork.yaml:2: executors.p.max_concurrency: expected an integer, got false"),
        ("executors:\n  p: {type: python, max_concurrency: 2.0}\n", "executors.p.max_concurrency: expected an integer, got 2.0"),
        ("executors:\n  p: {type: 5}\n", "ork.yaml:2: executors.p.type: expected a string, got 5"),
        ("storage: 1\n", "ork.yaml:1: storage: expected a string, got 1"),
        ('executors:\n  "bq\\n": {type: python}\n', "ork.yaml:2: executors['bq\\n']: executor name 'bq\\n' must start with a letter"),
    ],
)
def test_ork_yaml_values_are_strict_and_bounded(cli: Cli, project: Path, text: str, expected: str) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n")
    write(project / "ork.yaml", text)
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 2, result.out
    assert expected in result.err, result.err
    assert "Traceback" not in result.err


def _task(**keys: float) -> CompiledTask:
    base: dict[str, object] = dict(name="a", executor="python", depends_on=(), config_file="", retries=1000, retry_delay=5.0,
                                   retry_backoff=2.0, timeout=None, on_failure_run=False, env={}, task_config={})
    return CompiledTask(**{**base, **keys})  # type: ignore[arg-type]


def test_the_retry_delay_grows_by_the_backoff_up_to_max_retry_delay() -> None:
    t = _task(max_retry_delay=30.0)
    assert [t.retry_delay_after(n) for n in (1, 2, 3, 4, 5)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert _task(retry_backoff=100.0).retry_delay_after(1000) == 24 * 3600  # no overflow, the default cap
    assert _task(retry_backoff=0.5).retry_delay_after(3) == 1.25


def test_a_run_waits_no_longer_than_max_retry_delay(cli: Cli, project: Path) -> None:
    write(project / "tasks.py", "def f() -> None:\n    raise ValueError('no')\n")
    write(project / "wf.yaml", task("retries: 3\n    retry_delay: 0.05\n    retry_backoff: 100\n    max_retry_delay: 0.1"))
    started = time.monotonic()
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 1, result.err
    assert time.monotonic() - started < 5  # 0.05 + 0.1 + 0.1 s; without the cap 0.05 + 5 + 500 s
    assert '"attempts": 4' in cli("runs", "show", result.out.split()[1], "--json", cwd=project).out
