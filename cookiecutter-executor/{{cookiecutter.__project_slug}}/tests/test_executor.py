"""The executor's own behaviour, run through ork's scheduler with `ork.testing.run_task`."""

from __future__ import annotations

import pytest

from ork import WorkflowError
from ork.testing import run_task
{%- if cookiecutter.kind == "deferred" %}

from job_server import JobServer


def test_a_job_runs_to_its_result(job_server: JobServer) -> None:
    result = run_task("{{ cookiecutter.executor_name }}", config={"url": job_server.url}, task={"job": "export", "params": {"rows": 3}})
    assert result.status == "success", result.describe()
    assert result.deferred, "the job should have been handed to the tracker"
    assert result.output == {"job_id": result.external_id, "result": {"job": "export", "params": {"rows": 3}}}


def test_a_failed_job_fails_the_task(job_server: JobServer) -> None:
    result = run_task("{{ cookiecutter.executor_name }}", config={"url": job_server.url}, task={"job": "export", "params": {"fail": True}})
    assert result.status == "failed"
    assert result.error == f"job {result.external_id} failed"


def test_an_unreachable_api_fails_with_the_address() -> None:
    result = run_task("{{ cookiecutter.executor_name }}", config={"url": "http://127.0.0.1:9", "request_timeout": 2}, task={"job": "export"})
    assert result.status == "failed"
    assert result.error is not None and "http://127.0.0.1:9/jobs" in result.error
{%- else %}


def test_the_output_has_the_text_and_its_length() -> None:
    result = run_task("{{ cookiecutter.executor_name }}", task={"message": "hi", "repeat": 3})
    assert result.status == "success", result.describe()
    assert result.output == {"text": "hi hi hi", "length": 8}
    assert "processing 'hi'" in result.logs
{%- endif %}


def test_a_misspelled_task_key_is_refused_with_a_suggestion() -> None:
{%- if cookiecutter.kind == "deferred" %}
    with pytest.raises(WorkflowError, match=r"unknown key 'jbo' \(did you mean 'job'\?\)"):
        run_task("{{ cookiecutter.executor_name }}", config={"url": "http://127.0.0.1:9"}, task={"jbo": "export"})
{%- else %}
    with pytest.raises(WorkflowError, match=r"unknown key 'mesage' \(did you mean 'message'\?\)"):
        run_task("{{ cookiecutter.executor_name }}", task={"mesage": "hi"})
{%- endif %}
