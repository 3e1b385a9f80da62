"""The `http` executor against a real server: one request, its output, and every way it fails."""

from __future__ import annotations

import time

import pytest
from http_harness import TOKEN, HttpProject

from ork_core.errors import WorkflowError
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.workflow import load_workflow


def test_request_is_rendered_from_params_and_upstream_and_output_read_by_path(proj: HttpProject) -> None:
    result, run = proj.run(
        {
            "first": {"executor": "api", "url": "/echo/first", "query": {"v": 7}, "output_path": "query"},
            "second": {
                "executor": "api",
                "depends_on": ["first"],
                "method": "post",
                "url": "/echo/items/{{ params.item }}",
                "headers": {"X-Trace": "{{ ork.workflow }}-{{ ork.task }}"},
                "query": {"q": "{{ params.item | upper }}", "n": {"param": "n"}},
                "body": {
                    "name": "{{ params.item }}",
                    "count": {"param": "n"},
                    "from_upstream": {"ref": "tasks.first.output.v"},
                    "text": "v={{ upstream.first.v }}",
                },
                "output_path": "json",
            },
        },
        params={"item": "widget", "n": 3},
    )
    assert result.status == "success", run.tasks["second"].error
    assert run.tasks["second"].output == {"name": "widget", "count": 3, "from_upstream": "7", "text": "v=7"}
    sent = proj.server.recorder.headers[-1]
    assert sent["x-trace"] == "wf-second"
    assert sent["authorization"] == f"Bearer {TOKEN}" and sent["x-client"] == "ork-tests"
    assert sent["idempotency-key"] == run.tasks["second"].idempotency_key
    assert proj.server.recorder.count("POST /echo") == 1


def test_output_without_a_path_is_the_whole_json(proj: HttpProject) -> None:
    result, run = proj.run({"t": {"executor": "api", "url": "/echo/x", "query": {"a": "b"}}})
    assert result.status == "success"
    assert run.tasks["t"].output["query"] == {"a": "b"} and run.tasks["t"].output["method"] == "GET"


def test_wrong_status_fails_with_method_url_status_and_body(proj: HttpProject) -> None:
    result, run = proj.run(
        {"bad": {"executor": "api", "url": "/status/503"}, "accepted": {"executor": "api", "url": "/status/404", "accept_status": [404]}}
    )
    assert result.status == "failed"
    assert run.tasks["bad"].error == (
        f"request: GET {proj.server.url}/status/503 returned 503 Service Unavailable (expected a 2xx status); "
        'body: {"error": "you asked for 503"}'
    )
    assert run.tasks["accepted"].status == "success"
    assert run.tasks["accepted"].output == {"error": "you asked for 404"}


def test_bad_json_path_names_the_path_and_what_is_there(proj: HttpProject) -> None:
    result, run = proj.run(
        {
            "path": {"executor": "api", "url": "/echo/x", "output_path": "query.nope"},
            "index": {"executor": "api", "url": "/echo/x", "output_path": "path.0"},
            "text": {"executor": "api", "url": "/text", "output_path": "a"},
        }
    )
    assert result.status == "failed"
    assert run.tasks["path"].error == "output_path 'query.nope': no 'nope' at 'query' of the response JSON, which has an empty object"
    assert run.tasks["index"].error == "output_path 'path.0': cannot look up '0' at 'path' of the response JSON, which has str '/echo/x'"
    assert run.tasks["text"].error == (
        f"request: GET {proj.server.url}/text returned a body that is not JSON (text/plain): hello, not json"
    )


def test_unknown_template_variable_fails_before_any_request(proj: HttpProject) -> None:
    result, run = proj.run(
        {
            "typo": {"executor": "api", "url": "/echo/{{ paramz.item }}"},
            "missing": {"executor": "api", "url": "/echo", "body": {"a": "{{ params.nothere }}"}},
        },
        params={"item": "x"},
    )
    assert result.status == "failed"
    assert run.tasks["typo"].error == "task 'typo' url:1: 'paramz' is undefined (variables available: ork, params, upstream)"
    assert "task 'missing' body.a:1: 'dict object' has no attribute 'nothere'" in (run.tasks["missing"].error or "")
    assert proj.server.recorder.requests == {}


def test_slow_server_hits_the_executor_timeout(proj: HttpProject) -> None:
    proj.configure(timeout=0.3)
    started = time.monotonic()
    result, run = proj.run({"slow": {"executor": "api", "url": "/slow/10"}})
    assert time.monotonic() - started < 5
    assert result.status == "failed"
    assert run.tasks["slow"].error == f"request: GET {proj.server.url}/slow/10 got no response within 0.3s (the executor's timeout)"


def test_slow_server_hits_the_task_timeout(proj: HttpProject) -> None:
    proj.configure(timeout=30)
    started = time.monotonic()
    result, run = proj.run({"slow": {"executor": "api", "url": "/slow/10", "timeout": 0.3}})
    assert time.monotonic() - started < 5
    assert run.tasks["slow"].error == "timed out after 0.3s"


def test_connection_refused_is_one_clear_message(proj: HttpProject) -> None:
    result, run = proj.run({"t": {"executor": "api", "url": "http://127.0.0.1:9/x?token=abc&page=2"}})
    error = run.tasks["t"].error or ""
    assert error.startswith("request: GET http://127.0.0.1:9/x?token=***&page=2 failed: ConnectError:"), error
    assert "abc" not in error


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            {"executor": "api", "url": "/x", "headers": {"Authorization": "Bearer {{ params.t }}"}},
            "header 'Authorization' carries credentials; put it under the executor's config.headers in ork.yaml",
        ),
        ({"executor": "api", "url": "/x", "method": "FETCH"}, "tasks.t.method"),
        ({"executor": "api", "url": "/x", "output_path": "a..b"}, "'a..b' is not a dotted path"),
        ({"executor": "api", "url": "/x", "accept_status": [42]}, "[42] are not HTTP status codes"),
        ({"executor": "api", "urll": "/x"}, "tasks.t.urll"),
        (
            {"executor": "jobs", "url": "/jobs", "status_url": "/jobs/{{ run_id }}", "success_states": ["done"], "failure_states": ["done"]},
            "state(s) done are listed in both success_states and failure_states",
        ),
        # template syntax, found before anything runs
        ({"executor": "api", "url": "/x/{{ params.id "}, "tasks.t.url: template syntax error on line 1:"),
        ({"executor": "api", "url": "/x", "query": {"q": "{% for %}"}}, "tasks.t.query.q: template syntax error on line 1:"),
        ({"executor": "api", "url": "/x", "body": {"a": ["{{ }}"]}}, "tasks.t.body.a[0]: template syntax error on line 1:"),
        (
            {"executor": "jobs", "url": "/jobs", "status_url": "/jobs/{{ run_id }"},
            "tasks.t.status_url: template syntax error on line 1:",
        ),
    ],
)
def test_bad_task_keys_are_caught_by_validation(proj: HttpProject, task: dict[str, object], message: str) -> None:
    path = proj.workflow({"t": task})
    project = Project.load(proj.dir, build_plugin_manager({"ORK_PLUGINS": "http"}), env={"API_TOKEN": TOKEN})
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, project)
    assert message in str(caught.value)
    assert f"{path}:" in str(caught.value)


def test_bad_executor_config_names_the_field(proj: HttpProject) -> None:
    proj.configure(base_url="127.0.0.1:80", verify="yes-please")
    code, out, err = proj.ork_done("validate")
    assert code == 1
    assert "executors.api.config.base_url" in err and "must start with http:// or https://" in err
    assert TOKEN not in out + err


def test_a_heavy_template_does_not_time_out_other_requests(proj: HttpProject) -> None:
    """`run` is async, on ork's loop: rendering there let other tasks' deadlines run out."""
    heavy = "{% for i in range(100000) %}{% for j in range(500) %}{% endfor %}{% endfor %}rendered"  # seconds
    tasks = {"heavy": {"executor": "api", "method": "post", "url": "/echo", "body": {"text": heavy}, "output_path": "json.text"}}
    tasks |= {f"q{i}": {"executor": "api", "url": f"/echo/{i}", "timeout": 1} for i in range(6)}
    result, run = proj.run(tasks)
    errors = {name: t.error for name, t in run.tasks.items() if t.status != "success"}
    assert result.status == "success", errors
    assert run.tasks["heavy"].output == "rendered"


def test_template_syntax_errors_stop_validate_and_run(proj: HttpProject) -> None:
    """`ork validate` exits 1 and `ork run` exits 2 before any request is sent."""
    (proj.dir / "req.yaml").write_text("url: /x\nbody: {a: '{{ params.a '}\n")
    proj.workflow({"t": {"executor": "api", "url": "/x/{% if %}"}, "u": {"executor": "api", "config_file": "req.yaml"}})
    validated = proj.ork_done("validate", "wf.yaml")
    ran = proj.ork_done("run", "wf.yaml")
    assert (validated[0], ran[0]) == (1, 2), validated[2] + ran[2]
    assert ran[1] == "" and ran[2] == validated[2]
    assert f"{proj.dir / 'wf.yaml'}:5: tasks.t.url: template syntax error on line 1:" in validated[2]
    assert f"{proj.dir / 'req.yaml'}:2: body.a: template syntax error on line 1:" in validated[2]
