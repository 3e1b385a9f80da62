"""`ork serve`'s JSON API: every endpoint, bad input answered 4xx with the field named, tokens, masking."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="ork serve needs ork-core[web]")
import httpx  # noqa: E402

from webhelpers import SECRET, TOKEN, SchedulerProcess, Server, WebProject, free_port, make_project  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> WebProject:
    return make_project(tmp_path_factory.mktemp("webapi") / "proj")


@pytest.fixture(scope="module")
def server(proj: WebProject) -> Iterator[Server]:
    with Server(proj.dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_openapi_schema_lists_every_endpoint(http: httpx.Client) -> None:
    schema = http.get("/api/v1/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/logs", "/api/v1/runs/{run_id}/metrics",
        "/api/v1/jobs", "/api/v1/executors", "/api/v1/schedules", "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/retry", "/api/v1/schedules/{workflow}/pause",
    } <= paths
    assert "post" in schema["paths"]["/api/v1/runs"]
    assert not any(p.startswith("/runs") or p == "/" for p in paths)  # pages are not API


def test_runs_list_filters_and_pages(http: httpx.Client, proj: WebProject) -> None:
    ids = [r["id"] for r in http.get("/api/v1/runs").json()["runs"]]
    assert {proj.finished, proj.failed, proj.running} <= set(ids)
    by_status = http.get("/api/v1/runs", params={"status": "failed"}).json()["runs"]
    assert [r["id"] for r in by_status] == [proj.failed]
    both = http.get("/api/v1/runs", params=[("status", "failed"), ("status", "success")]).json()["runs"]
    assert {r["id"] for r in both} == {proj.failed, proj.finished, proj.scheduled}
    assert {r["id"] for r in http.get("/api/v1/runs", params={"status": "failed,running"}).json()["runs"]} == {proj.failed, proj.running}
    ok = http.get("/api/v1/runs", params={"workflow": "ok"}).json()["runs"]
    assert {r["id"] for r in ok} == {proj.finished, proj.running}
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    yesterday = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    assert http.get("/api/v1/runs", params={"since": tomorrow}).json()["runs"] == []
    assert http.get("/api/v1/runs", params={"until": yesterday}).json()["runs"] == []
    assert len(http.get("/api/v1/runs", params={"since": yesterday, "until": tomorrow}).json()["runs"]) >= 3
    first = http.get("/api/v1/runs", params={"limit": 1}).json()
    assert len(first["runs"]) == 1 and first["next_offset"] == 1
    second = http.get("/api/v1/runs", params={"limit": 1, "offset": first["next_offset"]}).json()
    assert second["runs"][0]["id"] != first["runs"][0]["id"]
    dated = http.get("/api/v1/runs", params={"limit": 1, "offset": 1, "since": yesterday}).json()
    assert dated["runs"][0]["id"] == second["runs"][0]["id"]
    tick = next(r for r in http.get("/api/v1/runs").json()["runs"] if r["id"] == proj.scheduled)
    assert tick["trigger"] == "schedule" and tick["schedule"] == "0" and tick["logical_date"].endswith("T02:00:00+00:00")
    run = next(r for r in http.get("/api/v1/runs").json()["runs"] if r["id"] == proj.failed)
    assert run["trigger"] == "manual" and run["final"] is True and run["duration_s"] is not None


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "bogus"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "many"}, "limit"),
     ({"offset": "-1"}, "offset"), ({"since": "last tuesday"}, "since")],
)
def test_runs_list_bad_input_names_the_field(http: httpx.Client, params: dict[str, str], field: str) -> None:
    assert error_of(http.get("/api/v1/runs", params=params), 422)["field"] == field


def test_one_run_with_tasks_attempts_outputs_errors(http: httpx.Client, proj: WebProject) -> None:
    run = http.get(f"/api/v1/runs/{proj.failed}").json()
    tasks = {t["name"]: t for t in run["tasks"]}
    assert run["status"] == "failed"
    assert tasks["transform"]["status"] == "failed" and "not fixed <b>yet</b>" in tasks["transform"]["error"]
    assert tasks["transform"]["depends_on"] == ["extract"]
    assert tasks["load"]["status"] == "upstream_failed"
    assert tasks["extract"]["output"] == {"who": "world"}
    assert [a["status"] for a in tasks["transform"]["attempts"]] == ["failed"]
    cut = http.get(f"/api/v1/runs/{proj.failed}", params={"excerpt": 5}).json()
    assert {t["name"]: t for t in cut["tasks"]}["extract"]["output_excerpt"] == '{"who'
    body = error_of(http.get("/api/v1/runs/no-such-run"), 404)
    assert body["field"] == "run_id" and "no-such-run" in body["error"]
    assert error_of(http.get(f"/api/v1/runs/{proj.failed}", params={"excerpt": "x"}), 422)["field"] == "excerpt"


def test_logs_paged_filtered_and_masked(http: httpx.Client, proj: WebProject) -> None:
    from ork_core import secrets

    secrets.register(SECRET)  # registered after the line was stored: masked as it leaves
    lines = http.get(f"/api/v1/runs/{proj.finished}/logs").json()
    assert {entry["task"] for entry in lines["lines"]} == {"extract", "shout"}
    shout = http.get(f"/api/v1/runs/{proj.finished}/logs", params={"task": "shout"}).json()["lines"]
    assert shout[0]["line"] == "<script>window.__xss = 1</script> and ***"
    assert SECRET not in http.get(f"/api/v1/runs/{proj.finished}/logs").text
    page1 = http.get(f"/api/v1/runs/{proj.failed}/logs", params={"task": "transform", "limit": 1}).json()
    assert len(page1["lines"]) == 1 and page1["next_offset"] == 1 and page1["run_status"] == "failed"
    page2 = http.get(f"/api/v1/runs/{proj.failed}/logs", params={"task": "transform", "offset": 1}).json()
    assert page2["lines"] and page2["lines"][0] != page1["lines"][0]
    assert http.get(f"/api/v1/runs/{proj.failed}/logs", params={"task": "transform", "attempt": 9}).json()["lines"] == []
    body = error_of(http.get(f"/api/v1/runs/{proj.failed}/logs", params={"task": "transfrom"}), 404)
    assert body["field"] == "task" and "transform" in body["error"]  # did you mean
    assert error_of(http.get(f"/api/v1/runs/{proj.failed}/logs", params={"wait": "99"}), 422)["field"] == "wait"
    assert error_of(http.get("/api/v1/runs/nope/logs"), 404)["field"] == "run_id"


def test_logs_long_poll_waits_for_a_running_run_only(http: httpx.Client, proj: WebProject) -> None:
    start = time.monotonic()
    done = http.get(f"/api/v1/runs/{proj.finished}/logs", params={"offset": 100, "wait": 5}).json()
    assert done["lines"] == [] and time.monotonic() - start < 4  # a final run has nothing more to wait for
    start = time.monotonic()
    live = http.get(f"/api/v1/runs/{proj.running}/logs", params={"offset": 0, "wait": 1}).json()
    assert live["lines"] == [] and live["run_status"] == "running" and time.monotonic() - start >= 0.5


def test_metrics_jobs_executors_schedules(http: httpx.Client, proj: WebProject, cli: Any) -> None:
    metrics = http.get(f"/api/v1/runs/{proj.finished}/metrics").json()["metrics"]
    assert [(m["task"], m["name"], m["value"]) for m in metrics] == [("shout", "rows", 3.0)]
    assert error_of(http.get("/api/v1/runs/nope/metrics"), 404)["field"] == "run_id"
    assert http.get("/api/v1/jobs").json() == {"jobs": []}
    result = cli("executors", "--json", cwd=proj.dir)
    assert http.get("/api/v1/executors").json()["executors"] == json.loads(result.out)
    (nightly,) = http.get("/api/v1/schedules").json()["schedules"]
    assert nightly["workflow"] == "nightly" and nightly["cron"] == "0 2 * * *" and nightly["paused"] is False
    assert nightly["last_tick"] == proj.tick
    now = dt.datetime.now(dt.timezone.utc)
    two = now.replace(hour=2, minute=0, second=0, microsecond=0)
    assert nightly["next_tick"] == (two if two > now else two + dt.timedelta(days=1)).timestamp()


def test_actions_refuse_a_missing_or_wrong_token(http: httpx.Client, proj: WebProject) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for url, body in (
            ("/api/v1/runs", {"workflow": "hello"}), (f"/api/v1/runs/{proj.running}/cancel", None),
            (f"/api/v1/runs/{proj.failed}/retry", None), ("/api/v1/schedules/nightly/pause", {"paused": True}),
        ):
            response = http.post(url, json=body, headers=headers)
            assert error_of(response, 401)["field"] == "Authorization", url
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert http.get(f"/api/v1/runs/{proj.running}").json()["cancel_requested"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [({"workflow": "hello", "params": {"times": "many"}}, "params.times"),
     ({"workflow": "hello", "params": {"whom": "x"}}, "params.whom"),
     ({"workflow": "hello", "params": ["who=x"]}, "params"),
     ({"workflow": "hello", "params": {"who": {"nested": 1}}}, "params.who"),
     ({"workflow": "helo"}, "workflow"),
     ({"workflow": "/etc/hosts.yaml"}, "workflow"),
     ({"params": {}}, "workflow"),
     ({"workflow": 3}, "workflow")],
)
def test_trigger_bad_input_names_the_field(http: httpx.Client, body: Any, field: str) -> None:
    assert error_of(http.post("/api/v1/runs", json=body, headers=AUTH), 422)["field"] == field


def test_trigger_queues_a_run_and_cancel_of_a_queued_run(http: httpx.Client, proj: WebProject) -> None:
    created = http.post("/api/v1/runs", json={"workflow": "hello", "params": {"who": "api", "times": 2}}, headers=AUTH)
    assert created.status_code == 201, created.text
    run = http.get(f"/api/v1/runs/{created.json()['id']}").json()
    assert run["status"] == "queued" and run["params"] == {"who": "api", "times": 2} and run["trigger"] == "manual"
    outside = proj.dir.parent / "outside.yaml"  # a valid workflow, but not the project's
    outside.write_text((proj.dir / "flows" / "hello.yaml").read_text().replace("tasks.py", "proj/flows/tasks.py"))
    refused = error_of(http.post("/api/v1/runs", json={"workflow": "../outside.yaml"}, headers=AUTH), 422)
    assert refused["field"] == "workflow" and "not a workflow of this project" in refused["error"]
    by_schedule = http.post("/api/v1/runs", json={"workflow": "nightly"}, headers=AUTH)  # a name from a stored schedule
    assert by_schedule.status_code == 201, by_schedule.text
    assert http.post(f"/api/v1/runs/{by_schedule.json()['id']}/cancel", headers=AUTH).status_code == 202
    by_path = http.post("/api/v1/runs", json={"workflow": "flows/hello.yaml"}, headers=AUTH)
    assert by_path.status_code == 201, by_path.text
    for run_id in (created.json()["id"], by_path.json()["id"]):  # nobody holds a queued run: cancelled at once
        assert http.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH).status_code == 202
        assert http.get(f"/api/v1/runs/{run_id}").json()["status"] == "cancelled"


def test_cancel_a_running_run_asks_its_owner(http: httpx.Client, proj: WebProject) -> None:
    assert error_of(http.post(f"/api/v1/runs/{proj.finished}/cancel", headers=AUTH), 409)["field"] == "run_id"
    assert error_of(http.post("/api/v1/runs/nope/cancel", headers=AUTH), 404)["field"] == "run_id"
    response = http.post(f"/api/v1/runs/{proj.running}/cancel", headers=AUTH)
    assert response.status_code == 202 and response.json() == {"id": proj.running, "cancel_requested": True}
    run = http.get(f"/api/v1/runs/{proj.running}").json()
    assert run["cancel_requested"] is True and run["status"] == "running"  # the web process runs nothing itself


def test_retry_bad_input(http: httpx.Client, proj: WebProject) -> None:
    assert error_of(http.post("/api/v1/runs/nope/retry", headers=AUTH), 404)["field"] == "run_id"
    assert error_of(http.post(f"/api/v1/runs/{proj.running}/retry", headers=AUTH), 409)["field"] == "run_id"
    assert error_of(http.post(f"/api/v1/runs/{proj.finished}/retry", headers=AUTH), 409)["field"] == "run_id"
    assert error_of(http.post(f"/api/v1/runs/{proj.failed}/retry", json={"tasks": ["nope"]}, headers=AUTH), 422)["field"] == "tasks.0"
    assert error_of(http.post(f"/api/v1/runs/{proj.failed}/retry", json={"tasks": "transform"}, headers=AUTH), 422)["field"] == "tasks"
    assert error_of(http.post(f"/api/v1/runs/{proj.failed}/retry", json={"downstream": "sure"}, headers=AUTH), 422)["field"] == "downstream"


def test_retry_a_failed_task_and_its_downstream(http: httpx.Client, proj: WebProject, tmp_path: Path) -> None:
    from orkhelpers import run_in_process

    _, run = run_in_process(proj.dir, proj.dir / "flows" / "flaky.yaml")  # its own, not the one other tests read
    (proj.dir / "flows" / "fixed").write_text("")
    try:
        response = http.post(f"/api/v1/runs/{run.id}/retry", json={"tasks": ["transform"]}, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["reset"] == ["transform", "load"]
        assert http.get(f"/api/v1/runs/{run.id}").json()["status"] == "queued"
        with SchedulerProcess(proj.dir, proj.db):
            deadline = time.monotonic() + 60
            while http.get(f"/api/v1/runs/{run.id}").json()["status"] not in ("success", "failed") and time.monotonic() < deadline:
                time.sleep(0.2)
        after = http.get(f"/api/v1/runs/{run.id}").json()
        assert after["status"] == "success", after
        tasks = {t["name"]: t for t in after["tasks"]}
        assert [a["status"] for a in tasks["transform"]["attempts"]] == ["failed", "success"]
        assert tasks["extract"]["attempt"] == 1  # a task that succeeded is not run again
    finally:
        (proj.dir / "flows" / "fixed").unlink()


def test_pause_and_unpause_a_schedule(http: httpx.Client) -> None:
    assert http.post("/api/v1/schedules/nightly/pause", json={"paused": True}, headers=AUTH).json() == {"workflow": "nightly", "paused": True}
    assert http.get("/api/v1/schedules").json()["schedules"][0]["paused"] is True
    http.post("/api/v1/schedules/nightly/pause", json={"paused": False}, headers=AUTH)
    assert http.get("/api/v1/schedules").json()["schedules"][0]["paused"] is False
    assert error_of(http.post("/api/v1/schedules/nightly/pause", json={"paused": "maybe"}, headers=AUTH), 422)["field"] == "paused"
    assert error_of(http.post("/api/v1/schedules/nightly/pause", json={}, headers=AUTH), 422)["field"] == "paused"
    body = error_of(http.post("/api/v1/schedules/nightlly/pause", json={"paused": True}, headers=AUTH), 404)
    assert body["field"] == "workflow" and "nightly" in body["error"]


def test_pages_escape_what_tasks_wrote(http: httpx.Client, proj: WebProject) -> None:
    page = http.get(f"/runs/{proj.finished}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "&lt;img src=x onerror" in page.text and "<img src=x" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    failed = http.get(f"/runs/{proj.failed}").text
    assert "not fixed &lt;b&gt;yet&lt;/b&gt;" in failed
    for url in ("/", "/schedules", "/executors", f"/runs/{proj.running}/panel", "/static/app.js", "/static/style.css"):
        assert http.get(url).status_code == 200, url
    missing = http.get("/runs/<nope>")
    assert missing.status_code == 404 and "no run &#39;&lt;nope&gt;&#39;" in missing.text  # a page, escaped
    assert http.get("/?status=bogus").status_code == 422


def test_run_panel_answers_304_while_nothing_changed(http: httpx.Client, proj: WebProject) -> None:
    first = http.get(f"/runs/{proj.finished}/panel")
    assert first.status_code == 200 and first.headers["etag"]
    same = http.get(f"/runs/{proj.finished}/panel", headers={"If-None-Match": first.headers["etag"]})
    assert same.status_code == 304 and same.content == b""
    other = http.get(f"/runs/{proj.failed}/panel", headers={"If-None-Match": first.headers["etag"]})
    assert other.status_code == 200


def test_another_host_header_is_refused_on_loopback(http: httpx.Client) -> None:
    """A DNS name re-bound to 127.0.0.1 cannot read the API from a browser."""
    assert error_of(http.get("/api/v1/runs", headers={"Host": "evil.example:8642"}), 421)["field"] == "Host"
    assert http.get("/api/v1/runs", headers={"Host": "localhost:8642"}).status_code == 200


def test_reads_need_the_token_when_not_public(proj: WebProject) -> None:
    with Server(proj.dir, public_reads=False) as private, httpx.Client(base_url=private.url) as client:
        assert error_of(client.get("/api/v1/runs"), 401)["field"] == "Authorization"
        login = client.get("/")
        assert login.status_code == 401 and "needs its API token" in login.text and "text/html" in login.headers["content-type"]
        assert client.get("/api/v1/runs", headers=AUTH).status_code == 200
        with httpx.Client(base_url=private.url, cookies={"ork_token": TOKEN}) as with_cookie:
            assert with_cookie.get("/api/v1/runs").status_code == 200
            assert with_cookie.get("/api/v1/runs", headers={"Host": "ork.example.org"}).status_code == 200  # any Host: not loopback-only


def test_ork_serve_command_prints_a_token_and_serves(proj: WebProject) -> None:
    from orkhelpers import ork_subprocess

    port = free_port()
    proc = ork_subprocess(["serve", "--port", str(port)], cwd=proj.dir, env={"ORK_API_TOKEN": ""})
    try:
        token_line = proc.stdout.readline() if proc.stdout else ""
        serving = proc.stdout.readline() if proc.stdout else ""
        assert token_line.startswith("API token for actions"), token_line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        assert f"http://127.0.0.1:{port}/" in serving
        token = token_line.rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/api/v1/runs").status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        refused = httpx.post(f"http://127.0.0.1:{port}/api/v1/schedules/nightly/pause", json={"paused": False})
        assert refused.status_code == 401
        ok = httpx.post(f"http://127.0.0.1:{port}/api/v1/schedules/nightly/pause", json={"paused": False},
                        headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_ork_serve_without_the_web_extra_says_what_to_install(cli: Any, proj: WebProject, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    result = cli("serve", cwd=proj.dir)
    assert result.code == 2
    assert "pip install 'ork-core[web]'" in result.err and "uvicorn" in result.err


def test_params_holding_a_secret_are_masked(http: httpx.Client) -> None:
    from ork_core import secrets

    secrets.register(SECRET)
    created = http.post("/api/v1/runs", json={"workflow": "hello", "params": {"who": SECRET}}, headers=AUTH)
    assert created.status_code == 201 and created.json()["params"]["who"] == "***"
    run_id = created.json()["id"]
    assert http.get(f"/api/v1/runs/{run_id}").json()["params"]["who"] == "***"
    assert SECRET not in http.get("/").text and SECRET not in http.get(f"/runs/{run_id}").text
    http.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)


def test_which_addresses_serve_public_reads() -> None:
    from ork_core.web import api_token, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.org", ""))
    assert api_token({"ORK_API_TOKEN": " chosen "}) == ("chosen", False)
    generated, fresh = api_token({})
    assert fresh and len(generated) >= 32 and generated != api_token({})[0]


def test_next_tick_of_a_schedule_as_ork_scheduler_stores_it(tmp_path: Path) -> None:
    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.storage.base import ScheduleRecord
    from ork_core.web import _next_tick_function
    from ork_core.workflow import load_workflow
    from orkhelpers import write

    write(tmp_path / "tasks.py", "def noop() -> int:\n    return 1\n")
    write(tmp_path / "wf.yaml", """
        name: hourly
        schedule: {cron: "15 * * * *", timezone: Europe/Berlin, params: {}}
        tasks:
          t: {file: tasks.py, function: noop}
    """)
    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
    (schedule,) = load_workflow(tmp_path / "wf.yaml", Project.load(tmp_path, pm)).schedules
    record = ScheduleRecord("hourly", schedule.key, "wf.yaml", schedule.cron, schedule.timezone, schedule.catchup,
                            schedule.max_active_runs, schedule.to_json(), time.time())
    next_tick = _next_tick_function()
    assert next_tick is not None
    now = time.time()
    expected = schedule.next_after(now)
    assert expected is not None and next_tick(record, now) == expected.ts
    assert dt.datetime.fromtimestamp(expected.ts, dt.timezone.utc).minute == 15


def test_trigger_by_a_name_stored_in_the_served_database(proj: WebProject, tmp_path: Path) -> None:
    """`ork serve --db OTHER`: a schedule's workflow stored there, outside ork.yaml's globs, is found."""
    from ork_core.storage.base import ScheduleRecord
    from orkhelpers import write
    from webhelpers import storage_of

    weekly = write(proj.dir / "other" / "weekly.yaml", """
        name: weekly
        tasks:
          only: {file: ../flows/tasks.py, function: hello}
    """)
    other = tmp_path / "other.db"
    with storage_of(other) as storage:
        storage.save_schedules("weekly", [ScheduleRecord("weekly", "0", str(weekly), "0 3 * * 1", "UTC", False, 1,
                                                         {"key": "0", "cron": "0 3 * * 1"}, time.time())])
    with Server(proj.dir, db=f"sqlite:///{other}") as srv, httpx.Client(base_url=srv.url) as client:
        created = client.post("/api/v1/runs", json={"workflow": "weekly"}, headers=AUTH)
        assert created.status_code == 201, created.text
        assert client.get("/api/v1/runs").json()["runs"][0]["workflow"] == "weekly"
