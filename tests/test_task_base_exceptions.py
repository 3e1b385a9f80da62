"""Whatever a task raises is data: `SystemExit`, `KeyboardInterrupt`, `GeneratorExit` … fail the task.

They used to end ork itself, and every `ork resume` died the same way. These run a real
`ork run` (a `KeyboardInterrupt` escaping into pytest would end the whole session), except
the hook-wrapper path, which needs an inline plugin and raises only what pytest survives.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orkhelpers import ork_subprocess, write
from ork_core.hookspecs import hookimpl
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import Scheduler, create_run, execute
from ork_core.storage import open_storage, storage_url
from ork_core.workflow import load_workflow

TASKS = '''
import sys

class Boom(BaseException):
    pass

def exits() -> None:
    sys.exit(3)

def raises_systemexit() -> None:
    raise SystemExit(3)

def interrupts() -> None:
    raise KeyboardInterrupt

def generator_exit() -> None:
    raise GeneratorExit

def boom() -> None:
    raise Boom("boom")

async def async_exits() -> None:
    raise SystemExit(5)

def fine() -> str:
    return "fine"
'''

RAISERS = '''
from pydantic import BaseModel
from ork import executor

class Nothing(BaseModel):
    pass

@executor
class SyncRaiser:
    def __init__(self, config: Nothing) -> None:
        pass

    def run(self, config_file, ctx, upstream={}):
        raise SystemExit(6)

@executor
class AsyncRaiser:
    def __init__(self, config: Nothing) -> None:
        pass

    async def run(self, config_file, ctx, upstream={}):
        raise KeyboardInterrupt
'''

EXPECTED = {
    "exits": "SystemExit: 3",
    "raises_systemexit": "SystemExit: 3",
    "interrupts": "KeyboardInterrupt raised by the task",
    "generator_exit": "GeneratorExit raised by the task",
    "boom": "Boom: boom",
    "async_exits": "SystemExit: 5",
    "exit_at_import": "SystemExit: 4",
    "interrupt_at_import": "KeyboardInterrupt raised by the task",
    "iso_exits": "raised SystemExit: 3",
    "iso_interrupts": "tasks.py:interrupts raised KeyboardInterrupt",
    "iso_exit_at_import": "raised SystemExit: 4",
    "sync_executor": "SystemExit: 6",
    "async_executor": "KeyboardInterrupt raised by the task",
}


def tasks_status(db: Path) -> dict[str, tuple[str, int, str | None]]:
    with sqlite3.connect(db) as conn:
        return {name: (status, attempt, error) for name, status, attempt, error in conn.execute(
            "SELECT name, status, attempt, error FROM tasks")}


def test_every_base_exception_of_a_task_fails_that_task_and_ork_goes_on(project: Path) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "exit_at_import.py", "raise SystemExit(4)\ndef f() -> None: pass\n")
    write(project / "interrupt_at_import.py", "raise KeyboardInterrupt\ndef f() -> None: pass\n")
    write(project / "raisers.py", RAISERS)
    write(project / "ork.yaml", """
        executors:
          sync_raiser: {type: "raisers:SyncRaiser"}
          async_raiser: {type: "raisers:AsyncRaiser"}
        """)
    lines = ["name: raisers", "tasks:"]
    for function in ("exits", "raises_systemexit", "interrupts", "generator_exit", "boom", "async_exits"):
        retries = ", retries: 1, retry_delay: 0" if function == "interrupts" else ""
        lines.append(f"  {function}: {{file: tasks.py, function: {function}{retries}}}")
    lines += [
        "  exit_at_import: {file: exit_at_import.py, function: f}",
        "  interrupt_at_import: {file: interrupt_at_import.py, function: f}",
        "  iso_exits: {file: tasks.py, function: exits, isolation: process}",
        "  iso_interrupts: {file: tasks.py, function: interrupts, isolation: process}",
        "  iso_exit_at_import: {file: exit_at_import.py, function: f, isolation: process}",
        "  sync_executor: {executor: sync_raiser}",
        "  async_executor: {executor: async_raiser}",
        "  fine: {file: tasks.py, function: fine}",
        "  after: {file: tasks.py, function: fine, depends_on: [fine]}",
    ]
    (project / "wf.yaml").write_text("\n".join(lines) + "\n")
    proc = ork_subprocess(["run", "wf.yaml"], cwd=project)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err  # the run failed; ork itself did not exit from a task
    got = tasks_status(project / ".ork" / "ork.db")
    assert got["fine"][0] == got["after"][0] == "success"
    for name, text in EXPECTED.items():
        status, _, error = got[name]
        assert status == "failed" and error is not None and text in error, (name, got[name])
    assert got["interrupts"][1] == 2, "retries apply to a task's BaseException like to any failure"
    with sqlite3.connect(project / ".ork" / "ork.db") as conn:
        assert conn.execute("SELECT status FROM runs").fetchone() == ("failed",)


class _Wrapper:
    """An ``ork_task_run`` wrapper: the task's BaseException passes through it on a worker thread."""

    __name__ = "test:wrapper"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def ork_task_run(self, ctx: Any, executor: object, config_file: str, upstream: dict[str, Any]) -> Any:
        try:
            return (yield)
        except BaseException as exc:
            self.seen.append(type(exc).__name__)
            raise


@pytest.mark.parametrize(("function", "text"), [("raises_systemexit", "SystemExit: 3"), ("boom", "Boom: boom"),
                                                ("generator_exit", "GeneratorExit raised by the task")])
def test_a_base_exception_through_the_task_run_hook_wrapper_fails_the_task(
    project: Path, function: str, text: str, monkeypatch: pytest.MonkeyPatch, fresh_modules: None
) -> None:
    monkeypatch.delenv("ORK_DB", raising=False)
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", f"""
        name: wrapped
        tasks:
          raiser: {{file: tasks.py, function: {function}}}
          fine: {{file: tasks.py, function: fine}}
        """)
    wrapper = _Wrapper()
    plugins = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}, plugins=[wrapper])
    loaded = Project.load(project, plugins)
    workflow = load_workflow(project / "wf.yaml", loaded)
    storage = open_storage(storage_url(None, project, None, env={}), plugins.registry)
    try:
        run_id = create_run(storage, workflow, {})
        scheduler = Scheduler(project=loaded, plugins=plugins, storage=storage, workflow=workflow, run_id=run_id, params={})
        result = execute(scheduler, handle_signals=False)
        record = storage.get_run(run_id)
    finally:
        storage.close()
    assert result.status == "failed"
    assert record.tasks["fine"].status == "success"
    raiser = record.tasks["raiser"]
    assert raiser.status == "failed" and raiser.error is not None and text in raiser.error
    assert wrapper.seen == [text.split(":")[0].split()[0]]
