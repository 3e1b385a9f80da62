"""A project folder wired to the test cluster, and ways to run workflows in it.

`run` executes a workflow in this process; `ork` starts the real CLI as a child process in
its own session (for kill -9 and resume).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ray_cluster import QUIET_ENV, RayCluster

from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import RunResult, Scheduler, coerce_params, create_run, execute
from ork_core.storage import open_storage, storage_url
from ork_core.storage.base import RunRecord, Storage
from ork_core.workflow import load_workflow

PLUGINS_ENV = {"ORK_PLUGINS": "ray"}


@dataclass
class RayProject:
    dir: Path
    cluster: RayCluster

    def configure(self, actor: dict[str, Any] | None = None, job: dict[str, Any] | None = None) -> None:
        """ork.yaml with executors `actors` (ray_actor) and `jobs` (ray_job) on the test cluster."""
        executors = {
            "actors": {"type": "ray_actor", "config": {"address": self.cluster.address, "num_actors": 2, **(actor or {})}},
            "jobs": {"type": "ray_job", "config": {"dashboard_url": self.cluster.dashboard_url, "poll_interval": 0.2, **(job or {})}},
        }
        (self.dir / "ork.yaml").write_text(yaml.safe_dump({"executors": executors}, sort_keys=False))

    def file(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(text))
        return path

    def workflow(self, tasks: dict[str, dict[str, Any]], name: str = "wf") -> Path:
        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "tasks": tasks}, sort_keys=False))
        return path

    def storage(self) -> Storage:
        plugins = build_plugin_manager(PLUGINS_ENV)
        return open_storage(storage_url(None, self.dir, None, env={}), plugins.registry)

    def run(self, tasks: dict[str, dict[str, Any]]) -> tuple[RunResult, RunRecord]:
        plugins = build_plugin_manager(PLUGINS_ENV)
        project = Project.load(self.dir, plugins, env={})
        compiled = load_workflow(self.workflow(tasks), project)
        params = coerce_params(compiled, {})
        storage = open_storage(storage_url(None, project.dir, None, env={}), plugins.registry)
        try:
            run_id = create_run(storage, compiled, params)
            scheduler = Scheduler(project=project, plugins=plugins, storage=storage, workflow=compiled, run_id=run_id, params=params)
            result = execute(scheduler, handle_signals=False)
            return result, storage.get_run(run_id)
        finally:
            storage.close()

    def logs(self, run_id: str, task: str) -> str:
        storage = self.storage()
        try:
            return "\n".join(f"{line.stream}: {line.line}" for line in storage.logs(run_id, task=task))
        finally:
            storage.close()

    def env(self) -> dict[str, str]:
        env = {**os.environ, **PLUGINS_ENV, **QUIET_ENV}
        env.pop("ORK_DB", None)
        env.pop("RAY_ADDRESS", None)
        return env

    def ork(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "ork_core", *args], cwd=self.dir, env=self.env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )

    def ork_done(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
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
