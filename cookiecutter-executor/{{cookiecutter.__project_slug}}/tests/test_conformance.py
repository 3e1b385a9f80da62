"""ork's conformance kit: the checks every executor runs, ork's own included.

`ExecutorConformance` runs the executor through ork's real scheduler and checks the
contract, the config round-trip, that registering the plugin imports nothing heavy, a
timeout, a cancel{% if cookiecutter.kind == "deferred" %}, and that ``ork resume`` after a crash adopts the submitted
job instead of submitting it again{% endif %}. Each check is a test method; a failure says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from ork.testing import ExecutorConformance, TaskResult
{%- if cookiecutter.kind == "deferred" %}

from job_server import JobServer
{%- endif %}


class Test{{ cookiecutter.__class_prefix }}Conformance(ExecutorConformance):
    executor = "{{ cookiecutter.executor_name }}"
    distribution = "{{ cookiecutter.__project_slug }}"
{%- if cookiecutter.kind == "sync" %}

    def config(self) -> Mapping[str, Any]:
        return {"prefix": "[test]"}

    def task(self) -> Mapping[str, Any]:
        return {"message": "hello", "repeat": 2}

    def slow_task(self) -> Mapping[str, Any]:
        return {"message": "slow", "delay": 60}

    def check_output(self, output: Any) -> None:
        assert output == {"text": "[test] hello hello", "length": 18}
{%- else %}

    @pytest.fixture(autouse=True)
    def _server(self, job_server: JobServer) -> None:
        self.server = job_server

    def config(self) -> Mapping[str, Any]:
        return {"url": self.server.url}

    def task(self) -> Mapping[str, Any]:
        return {"job": "report", "params": {"seconds": 0.1}}

    def slow_task(self) -> Mapping[str, Any]:
        return {"job": "report", "params": {"seconds": 60}}

    def submissions(self) -> int:
        return self.server.submissions

    def check_output(self, output: Any) -> None:
        assert output["result"] == {"job": "report", "params": {"seconds": 0.1}}

    def check_stopped(self, result: TaskResult) -> None:
        assert result.external_id is not None
        assert self.server.jobs[result.external_id]["state"] == "cancelled", "the job was not cancelled"
{%- endif %}
