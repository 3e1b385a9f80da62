"""ork's conformance kit on both Ray executors, against the session's test cluster."""

from __future__ import annotations

import sys
import textwrap
import time
from typing import Any

import pytest
from ray_cluster import RayCluster, alive

from ork.testing import ExecutorConformance, TaskResult

SLOW = """
    import os, time
    from pathlib import Path

    def hello(name: str) -> dict:
        return {"greeting": f"hello {name}", "pid": os.getpid()}

    def slow(pid_file: str) -> None:
        Path(pid_file).write_text(str(os.getpid()))
        time.sleep(60)
"""


class TestRayActorConformance(ExecutorConformance):
    executor = "ray_actor"
    distribution = "ork-executor-ray"

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: RayCluster) -> None:
        self.cluster = cluster

    def config(self) -> dict[str, Any]:
        return {"address": self.cluster.address, "num_actors": 1, "cancel_grace": 0.5}

    def _file(self) -> str:
        (self.project_dir / "funcs.py").write_text(textwrap.dedent(SLOW))
        return "funcs.py"

    def task(self) -> dict[str, Any]:
        return {"file": self._file(), "function": "hello", "inputs": {"name": {"const": "ray"}}}

    def slow_task(self) -> dict[str, Any]:
        return {"file": self._file(), "function": "slow", "inputs": {"pid_file": {"const": str(self.project_dir / "pid")}}}

    def check_output(self, output: Any) -> None:
        assert output["greeting"] == "hello ray"

    def check_stopped(self, result: TaskResult) -> None:
        pid_file = self.project_dir / "pid"
        if not pid_file.exists():  # cancelled before its actor was up: it must never start now
            time.sleep(2)
            assert not pid_file.exists(), "the cancelled task started on its actor afterwards"
            return
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid), "the actor still runs the cancelled function"


class TestRayJobConformance(ExecutorConformance):
    executor = "ray_job"
    distribution = "ork-executor-ray"
    poll_interval = 0.2

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: RayCluster) -> None:
        self.cluster = cluster

    def config(self) -> dict[str, Any]:
        return {"dashboard_url": self.cluster.dashboard_url, "poll_interval": 0.2}

    def task(self) -> dict[str, Any]:
        return {"entrypoint": f"{sys.executable} -c 'print(6 * 7)'"}

    def slow_task(self) -> dict[str, Any]:
        return {"entrypoint": f"{sys.executable} -c 'import time; time.sleep(60)'"}

    def check_output(self, output: Any) -> None:
        assert output["status"] == "SUCCEEDED"

    def check_stopped(self, result: TaskResult) -> None:
        from ray.job_submission import JobSubmissionClient

        assert result.external_id
        client = JobSubmissionClient(self.cluster.dashboard_url)
        deadline = time.monotonic() + 20
        while str(client.get_job_status(result.external_id).value) != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert str(client.get_job_status(result.external_id).value) == "STOPPED"
