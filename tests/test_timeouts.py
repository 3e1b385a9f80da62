"""A task's timeout measures its own time: another task's slow import, slow executor
``__init__`` or heavy preparation must not make it time out.

Each test starts the quick tasks only once the slow thing is under way (a `gate` task of
an executor of its own waits for the slow thing's marker file), so before the fixes they
reliably waited on it. The numbers are generous: 3 s of slowness against `timeout: 1`.
"""

from __future__ import annotations

from pathlib import Path

from orkhelpers import run_in_process, write
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import RunResult, create_run, execute, resume_scheduler
from ork_core.storage import open_storage
from ork_core.storage.base import RunRecord
from ork_core.workflow import load_workflow

SLOW_IMPORT = '''
import time
from pathlib import Path

Path(__file__).with_name("import-started").touch()
time.sleep(3)

def work() -> str:
    return "slow import done"
'''

QUICK = '''
def hello() -> str:
    return "hi"
'''

EXECUTORS = '''
import time
from pathlib import Path

from pydantic import BaseModel

from ork import Context, executor


class GateConfig(BaseModel):
    markers: list[str]


@executor
class Gate:
    """Returns once every marker file exists: the slow things have started."""

    def __init__(self, config: GateConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> str:
        deadline = time.monotonic() + 30
        while not all(Path(m).exists() for m in self.config.markers):
            if time.monotonic() > deadline:
                raise RuntimeError("the slow things never started")
            time.sleep(0.02)
        return "open"


class NoConfig(BaseModel):
    pass


@executor
class SlowInit:
    def __init__(self, config: NoConfig) -> None:
        Path(__file__).with_name("init-started").touch()
        time.sleep(3)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> str:
        return "slow init done"
'''


def _project(folder: Path, markers: list[str]) -> None:
    write(folder / "slow_import.py", SLOW_IMPORT)
    write(folder / "quick.py", QUICK)
    write(folder / "quick_mod.py", QUICK)
    write(folder / "executors_here.py", EXECUTORS)
    listed = ", ".join(f'"{folder / m}"' for m in markers)
    write(folder / "ork.yaml", f"""
        max_concurrency: 16
        executors:
          gate: {{type: "executors_here:Gate", config: {{markers: [{listed}]}}}}
          slow_init: {{type: "executors_here:SlowInit", config: {{}}}}
        """)


def _quick_tasks(n: int) -> str:
    tasks = ""
    for i in range(n):
        source = "module: quick_mod" if i % 2 else "file: quick.py"
        tasks += f"  q{i}: {{{source}, function: hello, timeout: 1, depends_on: [gate]}}\n"
    return tasks


def _run(folder: Path, workflow: str) -> tuple[RunResult, RunRecord]:
    return run_in_process(folder, write(folder / "wf.yaml", workflow))


def test_a_slow_import_or_executor_init_does_not_time_out_other_tasks(project: Path, fresh_modules: None) -> None:
    _project(project, ["import-started", "init-started"])
    result, run = _run(project, "name: w\ntasks:\n"
        "  slow: {file: slow_import.py, function: work}\n"
        "  slow_init: {executor: slow_init}\n"
        "  gate: {executor: gate}\n" + _quick_tasks(6))
    errors = {name: t.error for name, t in run.tasks.items() if t.status != "success"}
    assert result.status == "success", errors
    assert run.tasks["slow"].output == "slow import done" and run.tasks["slow_init"].output == "slow init done"


LATE_EXECUTOR = '''
import time
from pathlib import Path

from pydantic import BaseModel

from ork import Context, executor

if Path(__file__).with_name("import-is-slow").exists():
    time.sleep(3)  # a heavy client library, imported when the executor is first resolved


class NoConfig(BaseModel):
    pass


@executor
class Late:
    def __init__(self, config: NoConfig) -> None:
        pass

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> str:
        return "late"
'''

NAP = '''
import time

def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"
'''


def test_a_resumed_run_imports_executors_before_any_task_runs(project: Path, fresh_modules: None) -> None:
    """`ork resume` compiles nothing, so executors are resolved (imported) during the run:
    on the loop, while other tasks' deadlines ran, when a dependent task was first queued."""
    import sys

    write(project / "quick.py", QUICK)
    write(project / "nap.py", NAP)
    write(project / "late_exec.py", LATE_EXECUTOR)
    write(project / "ork.yaml", 'executors:\n  late: {type: "late_exec:Late", config: {}}\n')
    wf = write(project / "wf.yaml", """
        name: w
        tasks:
          first: {file: quick.py, function: hello}
          busy: {file: nap.py, function: nap, inputs: {seconds: 0.5}, timeout: 1.5}
          later: {executor: late, depends_on: [first]}
        """)
    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
    compiled = load_workflow(wf, Project.load(project, pm))
    storage = open_storage(f"sqlite:///{project / '.ork' / 'ork.db'}", pm.registry)
    try:
        run_id = create_run(storage, compiled, {})  # as if ork died before it started anything
        sys.modules.pop("late_exec", None)
        write(project / "import-is-slow", "")
        scheduler = resume_scheduler(project=Project.load(project, pm), plugins=pm, storage=storage, run_id=run_id)
        result = execute(scheduler, resumed=True, handle_signals=False)
        run = storage.get_run(run_id)
    finally:
        storage.close()
    errors = {name: t.error for name, t in run.tasks.items() if t.status != "success"}
    assert result.status == "success", errors
    assert run.tasks["later"].output == "late"
