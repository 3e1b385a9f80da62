"""ork's conformance kit, run against the installed ``process`` executor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ork.testing import ExecutorConformance, TaskResult
from ork_core.proctree import group_members


class TestProcessConformance(ExecutorConformance):
    executor = "process"
    distribution = "ork-executor-process"
    timeout_seconds = 1.0
    cancel_after = 0.5

    def task(self) -> Mapping[str, Any]:
        return {"command": ["sh", "-c", "echo hello"]}

    def slow_task(self) -> Mapping[str, Any]:
        # records its group, then waits on a grandchild: the kit checks the timeout and cancel,
        # check_stopped checks that nothing of the group survived
        return {"command": ["sh", "-c", "echo $$ > pgid; sleep 300 & sleep 300"]}

    def check_output(self, output: Any) -> None:
        assert output["exit_code"] == 0 and output["duration_s"] >= 0

    def check_stopped(self, result: TaskResult) -> None:
        pgid = int((self.project_dir / "pgid").read_text())
        assert group_members(pgid) == [], f"processes of group {pgid} survived: {group_members(pgid)}"
