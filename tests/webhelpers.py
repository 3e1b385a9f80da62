"""Helpers for the `ork serve` tests: a project with runs in every state, a server, a scheduler stand-in."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orkhelpers import ork_subprocess, run_in_process, write

TOKEN = "web-test-token-0123456789"
SECRET = "hunter2-very-secret-value"
"""A value a task logs before it is registered as a secret: the web app must mask it as it leaves."""


@dataclass
class WebProject:
    dir: Path
    db: Path
    finished: str
    failed: str
    running: str
    scheduled: str
    """A finished run of nightly's schedule, for its last tick at 02:00 UTC two days ago."""
    tick: int


def make_project(folder: Path) -> WebProject:
    """A project with a finished, a failed (its middle task, until a marker file exists) and a running run."""
    write(folder / "ork.yaml", """
        executors:
          python:
            type: python
          warehouse:                   # broken: the executors page shows it with its error
            type: bigquerry
        workflows: ["flows/*.yaml"]
    """)
    write(folder / "flows" / "tasks.py", f'''
        from pathlib import Path
        from ork import Context

        def hello(ctx: Context, who: str = "world") -> dict:
            ctx.log.info("hello %s", who)
            return {{"who": who}}

        def shout(ctx: Context) -> str:
            ctx.log.info("<script>window.__xss = 1</script> and {SECRET}")
            ctx.metrics.record("rows", 3)
            return "<img src=x onerror=window.__xss=2>"

        def flaky(ctx: Context) -> int:
            ctx.log.info("trying attempt %d", ctx.attempt)
            if not (Path(__file__).parent / "fixed").exists():
                raise RuntimeError("not fixed <b>yet</b>")
            return 1
    ''')
    write(folder / "flows" / "ok.yaml", """
        name: ok
        tasks:
          extract: {file: tasks.py, function: hello}
          shout: {file: tasks.py, function: shout, depends_on: [extract]}
    """)
    write(folder / "flows" / "flaky.yaml", """
        name: flaky
        tasks:
          extract: {file: tasks.py, function: hello}
          transform: {file: tasks.py, function: flaky, depends_on: [extract]}
          load: {file: tasks.py, function: hello, depends_on: [transform]}
          report: {file: tasks.py, function: hello, depends_on: [extract]}
    """)
    write(folder / "flows" / "hello.yaml", """
        name: hello
        params: {who: world, times: 1}
        tasks:
          greet: {file: tasks.py, function: hello, inputs: {who: {param: who}}}
    """)
    write(folder / "flows" / "nightly.yaml", """
        name: nightly
        tasks:
          only: {file: tasks.py, function: hello}
    """)
    _, finished = run_in_process(folder, folder / "flows" / "ok.yaml")
    _, failed = run_in_process(folder, folder / "flows" / "flaky.yaml")
    db = folder / ".ork" / "ork.db"
    with storage_of(db) as storage:
        running = _fake_running(folder, storage)
        scheduled, tick = _fake_tick_run(folder, storage)
        from ork_core.storage.base import ScheduleRecord

        storage.save_schedules("nightly", [ScheduleRecord(
            workflow="nightly", key="0", file=str(folder / "flows" / "nightly.yaml"), cron="0 2 * * *", timezone="UTC",
            catchup=False, max_active_runs=1, spec={"key": "0", "cron": "0 2 * * *", "timezone": "UTC"}, updated_at=time.time(),
        )])
    assert finished.status == "success" and failed.status == "failed"
    return WebProject(folder, db, finished.id, failed.id, running, scheduled, tick)


def _fake_running(folder: Path, storage: Any) -> str:
    """A run in ``running`` state as its ork left it mid-way (no process executes it: nothing moves)."""
    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.scheduler import create_run
    from ork_core.storage.base import RunUpdate, TaskUpdate
    from ork_core.workflow import load_workflow

    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
    workflow = load_workflow(folder / "flows" / "ok.yaml", Project.load(folder, pm))
    run_id = create_run(storage, workflow, {})
    now = time.time()
    storage.write([
        RunUpdate(run_id, {"status": "running", "started_at": now}),
        TaskUpdate(run_id, "extract", {"status": "running", "attempt": 1, "try_number": 1, "started_at": now}),
    ])
    return run_id


def _fake_tick_run(folder: Path, storage: Any) -> tuple[str, int]:
    """The run `ork scheduler` would have made for a tick of nightly, finished."""
    import datetime as dt

    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.scheduler import create_run
    from ork_core.storage.base import RunOrigin, RunUpdate, TaskUpdate
    from ork_core.workflow import load_workflow

    day = dt.datetime.now(dt.timezone.utc).replace(hour=2, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    origin = RunOrigin("schedule", "0", int(day.timestamp()), day.isoformat(), (day - dt.timedelta(days=1)).isoformat(), day.isoformat())
    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
    workflow = load_workflow(folder / "flows" / "nightly.yaml", Project.load(folder, pm))
    run_id = create_run(storage, workflow, {}, origin=origin, queued=True)
    now = time.time()
    storage.write([
        TaskUpdate(run_id, "only", {"status": "success", "attempt": 1, "try_number": 1, "started_at": now, "finished_at": now + 0.5}),
        RunUpdate(run_id, {"status": "success", "started_at": now, "finished_at": now + 0.5}),
    ])
    return run_id, int(day.timestamp())


@contextmanager
def storage_of(db: Path) -> Iterator[Any]:
    from ork_core.plugins import build_plugin_manager
    from ork_core.storage import open_storage

    storage = open_storage(f"sqlite:///{db}", build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}).registry)
    try:
        yield storage
    finally:
        storage.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """`ork serve`'s app for a project, by uvicorn in a thread on 127.0.0.1 and a free port."""

    def __init__(self, folder: Path, *, public_reads: bool = True, db: str | None = None) -> None:
        import uvicorn

        from ork_core.cli import Env, executor_rows
        from ork_core.web import build_config
        from ork_core.web.app import create_app

        env = Env(False, db)
        env._plugins = __import__("ork_core.plugins", fromlist=["x"]).build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
        project = env.project(folder)
        self.storage = env.storage(project)
        config = build_config(
            project=project, plugins=env.plugins, storage=self.storage, token=TOKEN, public_reads=public_reads,
            executor_rows=lambda: executor_rows(env, project),
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="ork-serve", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.storage.close()


class SchedulerProcess:
    """A real `ork scheduler` for the project while in the block: it starts the queued runs.

    It serves the workflows without a schedule only (given as paths), so the schedule these
    tests stored for ``nightly`` stays as they made it and no tick run appears among theirs.
    """

    def __init__(self, folder: Path, db: Path) -> None:
        self.folder = folder
        self.db = db
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SchedulerProcess:
        flows = [f"flows/{name}.yaml" for name in ("ok", "flaky", "hello")]
        self.proc = ork_subprocess(["scheduler", "--poll", "0.1", *flows], cwd=self.folder)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # stops resumably; the runs the tests wait for are done by then
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.log = err
