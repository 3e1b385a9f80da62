"""ork's executor conformance kit (``ork.testing``) run against the installed ``cloudrun`` plugin.

The kit runs its own workflows (in-process, and a child process for the crash check);
they all reach the FakeCloudRun this test process starts, through the endpoint in
``config()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fake_cloudrun import FakeCloudRun

testing = pytest.importorskip("ork.testing", reason="the conformance kit ork.testing is not available")

PROJECT = "ork-test"  # same as the conftest fixtures
REGION = "europe-west1"


class TestCloudRunConformance(testing.ExecutorConformance):  # type: ignore[misc, name-defined]
    executor = "cloudrun"
    distribution = "ork-executor-cloudrun"

    fake: FakeCloudRun

    @pytest.fixture(autouse=True)
    def _fake(self, fake_cloudrun: FakeCloudRun) -> Iterator[None]:
        fake_cloudrun.add_job("quick", duration_s=0.2)
        fake_cloudrun.add_job("forever", duration_s=None)
        self.fake = fake_cloudrun
        yield

    def config(self) -> Mapping[str, Any]:
        return {
            "project": PROJECT,
            "region": REGION,
            "api_endpoint": self.fake.endpoint,
            "credentials": "anonymous",
            "poll_interval": 0.05,
            "request_timeout": 5.0,
        }

    def task(self) -> Mapping[str, Any]:
        return {"job": "quick"}

    def slow_task(self) -> Mapping[str, Any]:
        return {"job": "forever"}

    def submissions(self) -> int:
        return self.fake.run_calls

    def check_output(self, output: Any) -> None:
        (execution,) = self.fake.execution_names("quick")[:1]
        assert output["execution"] == execution
        assert output["succeeded_count"] == output["task_count"] == 1

    def check_stopped(self, result: Any) -> None:
        (execution,) = self.fake.execution_names("forever")
        assert self.fake.execution(execution).cancel_requested_at is not None, "ork did not cancel the execution"
