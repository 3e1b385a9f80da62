"""A project folder wired to a running JobServer, and ways to run workflows in it.

`run` executes a workflow in this process (fast, for most tests); `ork` starts the real
CLI as a child process in its own session (for kill -9 and resume).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from http_test_server import JobServer

from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import RunResult, Scheduler, coerce_params, create_run, execute
from ork_core.storage import open_storage, storage_url
from ork_core.storage.base import RunRecord, Storage
from ork_core.workflow import load_workflow

TOKEN = "s3cr3t-token-never-stored-0d4f"
PLUGINS_ENV = {"ORK_PLUGINS": "http"}


@dataclass
class HttpProject:
    dir: Path
    server: JobServer

    def configure(self, **overrides: Any) -> None:
        """ork.yaml with executors `api` (http) and `jobs` (http_async) pointed at the server."""
        config = {
            "base_url": self.server.url,
            "headers": {"Authorization": "Bearer ${API_TOKEN}", "X-Client": "ork-tests"},
            "timeout": 2,
            **overrides,
        }
        executors = {"api": {"type": "http", "config": config}, "jobs": {"type": "http_async", "config": config}}
        (self.dir / "ork.yaml").write_text(yaml.safe_dump({"executors": executors}, sort_keys=False))

    def workflow(self, tasks: dict[str, dict[str, Any]], params: dict[str, Any] | None = None, name: str = "wf") -> Path:
        path = self.dir / f"{name}.yaml"
        doc: dict[str, Any] = {"name": name}
        if params:
            doc["params"] = params
        doc["tasks"] = tasks
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def storage(self) -> Storage:
        plugins = build_plugin_manager(PLUGINS_ENV)
        return open_storage(storage_url(None, self.dir, None, env={}), plugins.registry)

    def run(
        self, tasks: dict[str, dict[str, Any]], params: dict[str, Any] | None = None, given: dict[str, str] | None = None
    ) -> tuple[RunResult, RunRecord]:
        plugins = build_plugin_manager(PLUGINS_ENV)
        project = Project.load(self.dir, plugins, env={"API_TOKEN": TOKEN})
        compiled = load_workflow(self.workflow(tasks, params), project)
        run_params = coerce_params(compiled, given or {})
        storage = open_storage(storage_url(None, project.dir, None, env={}), plugins.registry)
        try:
            run_id = create_run(storage, compiled, run_params)
            scheduler = Scheduler(
                project=project, plugins=plugins, storage=storage, workflow=compiled, run_id=run_id, params=run_params
            )
            result = execute(scheduler, handle_signals=False)
            return result, storage.get_run(run_id)
        finally:
            storage.close()

    def env(self) -> dict[str, str]:
        env = {**os.environ, **PLUGINS_ENV, "API_TOKEN": TOKEN}
        env.pop("ORK_DB", None)
        return env

    def ork(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "ork_core", *args], cwd=self.dir, env={**self.env(), **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )

    def ork_done(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        proc = self.ork(*args)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            stop(proc)
        return proc.returncode, out, err


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill the process's whole session if it still runs, reap it, close its pipes."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def job_task(**keys: Any) -> dict[str, Any]:
    """An http_async task against the test server's /jobs API; `keys` override or add."""
    spec = keys.pop("job", {})
    task: dict[str, Any] = {
        "executor": "jobs",
        "url": "/jobs",
        "body": spec,
        "run_id_path": "run.id",
        "status_url": "/jobs/{{ run_id }}",
        "status_path": "state",
        "success_states": ["done"],
        "failure_states": ["error", "cancelled"],
        "output_path": "result",
        "error_path": "detail.message",
        "poll_interval": 0.05,
        "cancel_url": "/jobs/{{ run_id }}",
    }
    task.update(keys)
    return task
