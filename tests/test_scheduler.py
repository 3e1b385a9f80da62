"""The run loop: outputs and refs, retries, timeouts, failure propagation, cancellation, hooks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orkhelpers import Cli, write
from ork import hookimpl
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.errors import OrkError
from ork_core.scheduler import RunResult, Scheduler, coerce_params, create_run, execute
from ork_core.storage import open_storage
from ork_core.storage.base import RunRecord
from ork_core.workflow import load_workflow

TASKS = '''
import asyncio, json, os, threading, time
from pathlib import Path
from typing_extensions import TypedDict
from pydantic import BaseModel
from ork import Context, TaskError, TaskSkipped

class Row(BaseModel):
    id: int
    name: str

class Stats(TypedDict):
    count: int

def extract(n: int) -> list[Row]:
    return [Row(id=i, name=f"r{i}") for i in range(n)]

def count(rows: list[Row], ctx: Context) -> Stats:
    ctx.log.info("counting %d rows", len(rows))
    ctx.metrics.record("rows", len(rows), labels={"task": ctx.task_name})
    return {"count": len(rows)}

def echo(value):
    return value

def flaky(marker: str, fail_times: int) -> str:
    path = Path(marker)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    with open(marker + ".times", "a") as fh:
        fh.write(f"{time.monotonic()}\\n")
    if n < fail_times:
        raise RuntimeError(f"flaky failure {n + 1}")
    return "ok"

def boom() -> None:
    raise ValueError("something broke")

def fail_clearly() -> None:
    raise TaskError("the input file is empty")

def skip() -> None:
    raise TaskSkipped("nothing to do today")

def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"

async def async_sleepy(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"

def wrong_return() -> int:
    return "not a number"

def join(upstream) -> int:
    return len(upstream)

_lock = threading.Lock()
_active = {"now": 0, "max": 0}

def concurrent(marker: str) -> int:
    with _lock:
        _active["now"] += 1
        _active["max"] = max(_active["max"], _active["now"])
    time.sleep(0.05)
    with _lock:
        _active["now"] -= 1
    Path(marker).write_text(str(_active["max"]))
    return _active["max"]
'''


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def run_started(self, run_id: str, workflow: Any, resumed: bool) -> None:
        pass

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        self.events.append((task, status, attempt))

    def run_finished(self, run_id: str, status: str) -> None:
        pass


def run_workflow(
    folder: Path,
    text: str,
    params: dict[str, str] | None = None,
    plugins: list[object] | None = None,
    ork_yaml: str | None = None,
    on_scheduler: Any = None,
) -> tuple[RunResult, RunRecord, Recorder, Any]:
    write(folder / "tasks.py", TASKS)
    if ork_yaml is not None:
        write(folder / "ork.yaml", ork_yaml)
    wf = write(folder / "wf.yaml", text)
    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}, plugins=plugins or [])
    project = Project.load(folder, pm)
    compiled = load_workflow(wf, project)
    storage = open_storage(f"sqlite:///{folder / '.ork' / 'ork.db'}", pm.registry)
    run_params = coerce_params(compiled, params or {})
    run_id = create_run(storage, compiled, run_params)
    recorder = Recorder()
    scheduler = Scheduler(
        project=project, plugins=pm, storage=storage, workflow=compiled, run_id=run_id, params=run_params, reporter=recorder
    )
    if on_scheduler is not None:
        on_scheduler(scheduler)
    result = execute(scheduler, handle_signals=False)
    return result, storage.get_run(run_id), recorder, storage


@pytest.fixture
def folder(project: Path, fresh_modules: None) -> Path:
    return project


def test_outputs_refs_params_logs_and_metrics(folder: Path) -> None:
    result, run, _, storage = run_workflow(folder, """
        name: etl
        params: {n: 2}
        tasks:
          extract:
            file: tasks.py
            function: extract
            inputs: {n: {param: n}}
          count:
            file: tasks.py
            function: count
            depends_on: [extract]
            inputs: {rows: {ref: tasks.extract.output}}
          first_name:
            file: tasks.py
            function: echo
            depends_on: [extract]
            inputs: {value: {ref: tasks.extract.output.0.name}}
          total:
            file: tasks.py
            function: join
            depends_on: [count, first_name]
        """, params={"n": "3"})
    assert result.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert run.params == {"n": 3}
    assert run.tasks["extract"].output == [{"id": i, "name": f"r{i}"} for i in range(3)]
    assert run.tasks["count"].output == {"count": 3}
    assert run.tasks["first_name"].output == "r0"
    assert run.tasks["total"].output == 2
    (line,) = storage.logs(run.id, "count")
    assert line.line == "counting 3 rows"
    (metric,) = storage.metrics(run.id)
    assert (metric.task, metric.name, metric.value, metric.labels) == ("count", "rows", 3.0, {"task": "count"})


def test_retries_with_delay_and_backoff(folder: Path) -> None:
    marker = folder / "flaky"
    result, run, recorder, storage = run_workflow(folder, f"""
        name: w
        tasks:
          f:
            file: tasks.py
            function: flaky
            retries: 2
            retry_delay: 0.2
            retry_backoff: 2
            inputs: {{marker: {{const: "{marker}"}}, fail_times: 2}}
        """)
    assert result.status == "success"
    assert run.tasks["f"].attempt == 3
    times = [float(t) for t in (folder / "flaky.times").read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.2 <= gaps[0] < 0.35 and 0.4 <= gaps[1] < 0.6, gaps
    attempts = storage.attempts(run.id)
    assert [(a.attempt, a.try_number, a.status) for a in attempts] == [(1, 1, "failed"), (2, 2, "failed"), (3, 3, "success")]
    assert "flaky failure 1" in (attempts[0].error or "")
    assert ("f", "retrying", 1) in recorder.events


def test_retries_exhausted_fails_with_the_last_error(folder: Path) -> None:
    result, run, _, _ = run_workflow(folder, f"""
        name: w
        tasks:
          f:
            file: tasks.py
            function: flaky
            retries: 1
            inputs: {{marker: "{folder / 'm'}", fail_times: 5}}
        """)
    assert result.status == "failed"
    assert run.tasks["f"].status == "failed"
    assert run.tasks["f"].error == "RuntimeError: flaky failure 2"


@pytest.mark.parametrize("function", ["sleepy", "async_sleepy"])
def test_timeout_fails_the_task(folder: Path, function: str) -> None:
    start = time.monotonic()
    result, run, _, _ = run_workflow(folder, f"""
        name: w
        tasks:
          slow:
            file: tasks.py
            function: {function}
            timeout: 0.3
            inputs: {{seconds: 3}}
        """)
    assert result.status == "failed"
    assert run.tasks["slow"].error == "timed out after 0.3s"
    assert time.monotonic() - start < 2.5


def test_failure_propagates_and_on_failure_tasks_still_run(folder: Path) -> None:
    result, run, _, _ = run_workflow(folder, """
        name: w
        tasks:
          a: {file: tasks.py, function: boom}
          b: {file: tasks.py, function: join, depends_on: [a]}
          c: {file: tasks.py, function: join, depends_on: [b]}
          cleanup: {file: tasks.py, function: join, depends_on: [a], on_failure: run}
          independent: {file: tasks.py, function: join}
        """)
    assert result.status == "failed"
    statuses = {n: t.status for n, t in run.tasks.items()}
    assert statuses == {"a": "failed", "b": "upstream_failed", "c": "upstream_failed", "cleanup": "success", "independent": "success"}
    assert run.tasks["a"].error == "ValueError: something broke"
    assert run.tasks["b"].error == "upstream task(s) did not succeed: a"
    assert run.tasks["cleanup"].output == 0


def test_task_error_message_and_skip(folder: Path) -> None:
    result, run, _, _ = run_workflow(folder, """
        name: w
        tasks:
          a: {file: tasks.py, function: fail_clearly}
          s: {file: tasks.py, function: skip}
          after_skip: {file: tasks.py, function: join, depends_on: [s]}
        """)
    assert run.tasks["a"].error == "the input file is empty"
    assert run.tasks["s"].status == "skipped"
    assert run.tasks["after_skip"].status == "skipped"


def test_return_value_is_validated_against_the_annotation(folder: Path) -> None:
    _, run, _, _ = run_workflow(folder, "name: w\ntasks:\n  a: {file: tasks.py, function: wrong_return}\n")
    assert run.tasks["a"].status == "failed"
    assert "returned a value that does not match its annotation" in (run.tasks["a"].error or "")


def test_argument_validation_and_missing_arguments(folder: Path) -> None:
    _, run, _, _ = run_workflow(folder, """
        name: w
        tasks:
          a: {file: tasks.py, function: extract, inputs: {n: "three"}}
          b: {file: tasks.py, function: extract}
          c: {file: tasks.py, function: extract, inputs: {n: 1, m: 2}}
        """)
    assert "argument 'n' is invalid: Input should be a valid integer" in (run.tasks["a"].error or "")
    assert "needs argument(s) n: bind them under 'inputs'" in (run.tasks["b"].error or "")
    assert "has no parameter(s) m" in (run.tasks["c"].error or "")


def test_missing_run_parameter_is_an_input_error(folder: Path) -> None:
    write(folder / "tasks.py", TASKS)
    with pytest.raises(Exception, match="run parameter.*n.*required"):
        run_workflow(folder, "name: w\ntasks:\n  a: {file: tasks.py, function: extract, inputs: {n: {param: n}}}\n")


def test_run_parameters_take_their_default_types_and_only_declared_names(folder: Path) -> None:
    text = "name: w\nparams: {day: '2026-01-01', n: 2}\ntasks:\n  a: {file: tasks.py, function: extract, inputs: {n: {param: n}}}\n"
    result, run, _, _ = run_workflow(folder, text, params={"n": "3", "day": "2026-02-01"})
    assert result.status == "success" and run.params == {"day": "2026-02-01", "n": 3}
    with pytest.raises(OrkError, match="--param n='three': expected an integer"):
        run_workflow(folder, text, params={"n": "three"})
    for bad in ("inf", "-inf", "nan", "1e400", "x"):
        with pytest.raises(OrkError, match=f"--param r='{bad}': expected a finite number"):
            run_workflow(folder, text.replace("n: 2}", "n: 2, r: 0.5}"), params={"r": bad})
    with pytest.raises(OrkError, match="--param 'dya' is not a parameter of this workflow \\(did you mean 'day'\\?\\); declared: day, n"):
        run_workflow(folder, text, params={"dya": "2026-02-01"})
    # a workflow that declares no params takes any (tasks read them from ctx.params)
    result, run, _, _ = run_workflow(folder, "name: w\ntasks:\n  a: {file: tasks.py, function: extract, inputs: {n: {const: 1}}}\n", params={"anything": "x"})
    assert result.status == "success" and run.params == {"anything": "x"}


def test_per_executor_concurrency_limit(folder: Path) -> None:
    tasks = "".join(
        f"  t{i}: {{executor: limited, file: tasks.py, function: concurrent, inputs: {{marker: '{folder / 'max'}'}}}}\n"
        for i in range(8)
    )
    result, run, _, _ = run_workflow(
        folder, "name: w\ntasks:\n" + tasks, ork_yaml="executors:\n  limited:\n    type: python\n    max_concurrency: 2\n"
    )
    assert result.status == "success"
    assert max(t.output for t in run.tasks.values()) == 2


def test_cancellation_marks_the_run_cancelled(folder: Path) -> None:
    def cancel_soon(scheduler: Scheduler) -> None:
        threading.Timer(0.3, scheduler.request_cancel).start()

    start = time.monotonic()
    result, run, _, _ = run_workflow(folder, """
        name: w
        tasks:
          slow: {file: tasks.py, function: async_sleepy, inputs: {seconds: 30}}
          after: {file: tasks.py, function: join, depends_on: [slow]}
        """, on_scheduler=cancel_soon)
    assert time.monotonic() - start < 5
    assert result.status == "cancelled"
    assert run.status == "cancelled"
    assert {n: t.status for n, t in run.tasks.items()} == {"slow": "cancelled", "after": "cancelled"}


def test_hook_call_order_for_a_whole_run(folder: Path) -> None:
    calls: list[str] = []

    class Spy:
        @hookimpl
        def ork_run_started(self, run_id: str, resumed: bool) -> None:
            calls.append(f"run_started resumed={resumed}")

        @hookimpl
        def ork_executor_created(self, name: str) -> None:
            calls.append(f"executor_created {name}")

        @hookimpl(wrapper=True)
        def ork_task_run(self, ctx: Any) -> Any:
            calls.append(f"task_run before {ctx.task_name}")
            result = yield
            calls.append(f"task_run after {ctx.task_name} -> {result!r}")
            return result

        @hookimpl
        def ork_task_status_changed(self, task_name: str, status: str, previous: str) -> None:
            calls.append(f"status {task_name} {previous}->{status}")

        @hookimpl
        def ork_executor_closed(self, name: str) -> None:
            calls.append(f"executor_closed {name}")

        @hookimpl
        def ork_run_finished(self, status: str) -> None:
            calls.append(f"run_finished {status}")

    run_workflow(folder, """
        name: w
        tasks:
          a: {file: tasks.py, function: echo, inputs: {value: 1}}
          b: {file: tasks.py, function: echo, depends_on: [a], inputs: {value: {ref: tasks.a.output}}}
        """, plugins=[Spy()])
    assert calls == [
        "run_started resumed=False",
        "status a pending->queued",
        "status a queued->running",
        "executor_created python",
        "task_run before a",
        "task_run after a -> 1",
        "status a running->success",
        "status b pending->queued",
        "status b queued->running",
        "task_run before b",
        "task_run after b -> 1",
        "status b running->success",
        "executor_closed python",
        "run_finished success",
    ]


def test_a_wrapper_can_veto_a_task(folder: Path) -> None:
    class Veto:
        @hookimpl(wrapper=True)
        def ork_task_run(self, ctx: Any) -> Any:
            if ctx.task_name == "forbidden":
                raise PermissionError("not on weekends")
            return (yield)

    result, run, _, _ = run_workflow(folder, """
        name: w
        tasks:
          allowed: {file: tasks.py, function: echo, inputs: {value: 1}}
          forbidden: {file: tasks.py, function: echo, inputs: {value: 1}}
        """, plugins=[Veto()])
    assert run.tasks["allowed"].status == "success"
    assert run.tasks["forbidden"].error == "PermissionError: not on weekends"


def test_cli_run_exit_codes_and_inspection(cli: Cli, folder: Path) -> None:
    write(folder / "tasks.py", TASKS)
    write(folder / "ok.yaml", "name: ok\ntasks:\n  a: {file: tasks.py, function: echo, inputs: {value: 7}}\n")
    write(folder / "bad.yaml", "name: bad\ntasks:\n  a: {file: tasks.py, function: boom}\n")
    write(folder / "invalid.yaml", "name: x\ntasks:\n  a: {depends_on: [zz]}\n")
    ok = cli("run", "ok.yaml", cwd=folder)
    assert ok.code == 0, ok.err
    run_id = ok.out.splitlines()[0].split()[1]
    assert "success" in ok.out
    assert cli("run", "bad.yaml", cwd=folder).code == 1
    invalid = cli("run", "invalid.yaml", cwd=folder)
    assert invalid.code == 2 and "tasks.a.depends_on[0]" in invalid.err
    assert cli("run", "missing.yaml", cwd=folder).code == 2
    shown = cli("runs", "show", run_id, "--json", cwd=folder)
    assert '"output": 7' in shown.out
    assert cli("runs", "show", "nope", cwd=folder).code == 2
    assert cli("logs", run_id, "--task", "zz", cwd=folder).code == 1
    assert (folder / ".ork" / "ork.db").is_file()


def test_a_timeout_error_raised_by_the_task_is_an_ordinary_failure(folder: Path) -> None:
    write(folder / "more.py", "def socket_timeout() -> None:\n    raise TimeoutError('read timed out')\n")
    result, run, _, _ = run_workflow(folder, """
        name: w
        tasks:
          no_timeout: {file: more.py, function: socket_timeout}
          with_timeout: {file: more.py, function: socket_timeout, timeout: 30}
        """)
    assert result.status == "failed"
    assert run.tasks["no_timeout"].error == "TimeoutError: read timed out"
    assert run.tasks["with_timeout"].error == "TimeoutError: read timed out"


def test_a_run_is_claimed_while_it_executes_and_released_however_it_ends(folder: Path) -> None:
    from ork_core.errors import RunClaimedError
    from ork_core.ownership import Owner

    seen: list[str | None] = []

    class WatchOwner:
        @hookimpl
        def ork_task_run(self, ctx: Any) -> None:
            seen.append(storage_ref[0].get_run(ctx.run_id).owner)

    storage_ref: list[Any] = []
    result, run, _, storage = run_workflow(
        folder, "name: w\ntasks:\n  a: {file: tasks.py, function: boom}\n", plugins=[WatchOwner()],
        on_scheduler=lambda s: storage_ref.append(s.storage),
    )
    assert result.status == "failed"
    assert seen == [Owner.current().token]  # held while the task ran
    assert run.owner is None  # released after a failure too
    storage.close()

    # a run whose owner was killed is not executed by Scheduler.run; `ork resume` takes it over
    dead = Owner(Owner.current().host, 2**22 + 12345, "gone:1").token
    with pytest.raises(RunClaimedError, match="which is gone; `ork resume") as caught:
        run_workflow(
            folder, "name: w\ntasks:\n  a: {file: tasks.py, function: echo, inputs: {value: 1}}\n",
            on_scheduler=lambda s: s.storage.claim_run(s.run_id, dead, expected=None),
        )
    assert caught.value.owner == dead
