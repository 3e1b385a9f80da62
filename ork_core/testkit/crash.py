"""A crash between submitting a job and committing it, then ``ork resume``, for the kit.

The crash is real: a child interpreter runs the workflow with a wrapper around the
``ork_task_run`` hook that ends the process (``os._exit``) the instant ``run`` returned a
``Deferred``, so the job exists outside while ork's database still says the task is
``running``. This process then resumes the run from that database and counts, with another
wrapper, whether ``run`` was called again (a second submit) or ``adopt`` found the job.

`interrupt_at_random` is the same idea for a whole workflow run by the real CLI: ``ork run``
and then ``ork resume`` after ``ork resume``, each killed (``kill -9``) or stopped (SIGTERM)
at a random moment, until the run ends by itself.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ork_core.context import Context
from ork_core.deferred import Deferred
from ork_core.hookspecs import hookimpl
from ork_core.project import Project
from ork_core.scheduler import Scheduler, create_run, execute, resume_scheduler
from ork_core.testkit.harness import (
    TASK_NAME,
    WORKFLOW_FILE,
    Recorder,
    Subject,
    TaskResult,
    child_env,
    drive,
    open_project_storage,
    read_result,
)
from ork_core.workflow import load_workflow

CRASH_EXIT = 86
_RUN_ID_PREFIX = "ork-testing-run-id: "
_RESULT_PREFIX = "ork-testing-result: "


class _CrashAfterSubmit:
    """Ends the process the moment ``run`` returned a Deferred, before ork commits it."""

    def __init__(self) -> None:
        self.__name__ = "ork.testing:crash-after-submit"

    @hookimpl(wrapper=True)
    def ork_task_run(self, ctx: Context, executor: object, config_file: str, upstream: dict[str, Any]) -> Any:
        result = yield
        if ctx.task_name == TASK_NAME and isinstance(result, Deferred):
            os._exit(CRASH_EXIT)
        return result


class _CountRuns:
    """Counts calls of the task's ``run`` (through the ``ork_task_run`` hook)."""

    def __init__(self) -> None:
        self.__name__ = "ork.testing:count-runs"
        self.calls = 0

    @hookimpl(wrapper=True)
    def ork_task_run(self, ctx: Context, executor: object, config_file: str, upstream: dict[str, Any]) -> Any:
        if ctx.task_name == TASK_NAME:
            self.calls += 1
        return (yield)


def main() -> None:
    """The child: run the workflow in ``argv[1]``'s folder; die once the job was submitted."""
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    subject = Subject.from_json(spec["subject"])
    folder = Path(spec["folder"])
    loaded = subject.plugins([_CrashAfterSubmit()])
    project = Project.load(folder, loaded)
    workflow = load_workflow(folder / WORKFLOW_FILE, project)
    storage = open_project_storage(project)
    run_id = create_run(storage, workflow, dict(workflow.params))
    print(f"{_RUN_ID_PREFIX}{run_id}", flush=True)
    recorder = Recorder()
    scheduler = Scheduler(
        project=project, plugins=loaded, storage=storage, workflow=workflow, run_id=run_id,
        params=dict(workflow.params), reporter=recorder, poll_interval=spec["poll_interval"],
    )
    run = execute(scheduler, handle_signals=False)
    result = read_result(storage, run, recorder, 0.0)
    storage.close()
    print(_RESULT_PREFIX + json.dumps({"status": result.status, "describe": result.describe()}), flush=True)


@dataclass(frozen=True)
class Crash:
    """What the child did: crashed after submitting (`run_id` set), or ran to the end."""

    run_id: str | None
    status: str | None = None
    describe: str = ""


def crash_after_submit(subject: Subject, folder: Path, *, poll_interval: float, deadline: float) -> Crash:
    """Run the workflow already written in `folder` in a child that dies right after the submit."""
    spec_file = folder / "crash.json"
    spec_file.write_text(
        json.dumps({"subject": subject.to_json(), "folder": str(folder), "poll_interval": poll_interval}),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-c", "from ork_core.testkit.crash import main; main()", str(spec_file)],
        capture_output=True, text=True, env=child_env(), timeout=deadline,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode == 0:
        ended = json.loads(next(x for x in lines if x.startswith(_RESULT_PREFIX))[len(_RESULT_PREFIX):])
        return Crash(None, ended["status"], ended["describe"])
    if proc.returncode != CRASH_EXIT:
        raise AssertionError(
            f"the run that should stop after submitting failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    return Crash(next(x for x in lines if x.startswith(_RUN_ID_PREFIX))[len(_RUN_ID_PREFIX):].strip())


@dataclass(frozen=True)
class Resumed:
    result: TaskResult
    run_calls: int
    """How often ``run`` was called during the resume (0 when ``adopt`` found the job)."""
    key_before: str | None
    key_after: str | None
    status_before: str


def resume(subject: Subject, folder: Path, run_id: str, *, plugins: Iterable[object], poll_interval: float,
           deadline: float) -> Resumed:
    """``ork resume`` the crashed run in this process, counting calls of ``run``."""
    counter = _CountRuns()
    loaded = subject.plugins([*plugins, counter])
    project = Project.load(folder, loaded)
    storage = open_project_storage(project)
    try:
        before = storage.get_run(run_id).tasks[TASK_NAME]
        recorder = Recorder()
        scheduler = resume_scheduler(
            project=project, plugins=loaded, storage=storage, run_id=run_id, reporter=recorder,
            poll_interval=poll_interval, force=True,  # the child is gone; its pid may be reused
        )
        run, elapsed = drive(scheduler, recorder, resumed=True, deadline=deadline)
        result = read_result(storage, run, recorder, elapsed)
        after = storage.get_run(run_id).tasks[TASK_NAME]
    finally:
        storage.close()
    return Resumed(result, counter.calls, before.idempotency_key, after.idempotency_key, before.status)


@dataclass(frozen=True)
class Interruption:
    """One round of `interrupt_at_random`: which command ran, for how long, and how it ended."""

    command: str
    """``run`` for the first round, ``resume`` after."""
    delay: float
    """Seconds after the start at which the signal was due."""
    action: str
    """``SIGKILL`` or ``SIGTERM`` (delivered), or ``finished`` (the run ended first)."""
    exit_code: int
    seconds: float
    pid: int
    stderr: str = ""
    """The end of what the process wrote to stderr (for the failure message)."""


def interrupt_at_random(
    start: Callable[[bool], subprocess.Popen[str]],
    *,
    rng: random.Random,
    rounds: int,
    delay: tuple[float, float],
    after_round: Callable[[Interruption], None] = lambda r: None,
    ready: Callable[[subprocess.Popen[str]], bool] = lambda p: True,
    finished: Callable[[], bool] = lambda: False,
    signals: tuple[int, ...] = (signal.SIGKILL, signal.SIGTERM),
    timeout: float = 60.0,
) -> list[Interruption]:
    """Start ``ork run``, then ``ork resume`` again and again, each killed at a random moment.

    `start(first)` starts the command (``run`` when `first`, else ``resume``). Each round
    waits until `ready(proc)` (the first: until the run exists), then a delay drawn from
    `delay`, and sends the next of `signals` (in turn, from a random first one, so that any two
    rounds use two kinds) unless the process already ended. After
    `rounds` interruptions the last resume runs to its end. `after_round` sees every round
    once its process is gone (check invariants there). It ends after a round that ended by
    itself, or when `finished()` says the run is over (a signal can land just after the
    run's last commit). Deterministic given `rng`'s seed, apart from the machine's timing.
    """
    done: list[Interruption] = []
    first = True
    turn = rng.randrange(len(signals))
    while True:
        began = time.monotonic()
        proc = start(first)
        try:
            while not ready(proc) and proc.poll() is None:
                if time.monotonic() - began > timeout:
                    raise AssertionError("the ork process never got ready")
                time.sleep(0.01)
            interrupt = len(done) < rounds
            wait = rng.uniform(*delay) if interrupt else timeout
            sig = signals[(turn + len(done)) % len(signals)] if interrupt else None
            try:
                proc.wait(wait)
                action = "finished"
            except subprocess.TimeoutExpired:
                if sig is None:
                    raise AssertionError(f"ork did not finish within {timeout}s") from None
                proc.send_signal(sig)
                action = signal.Signals(sig).name
                proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        result = Interruption("run" if first else "resume", wait if action != "finished" else 0.0, action,
                              proc.returncode, time.monotonic() - began, proc.pid, (err or "")[-2000:])
        done.append(result)
        after_round(result)
        first = False
        if action == "finished" or finished():
            return done
