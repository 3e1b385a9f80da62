"""Real `ork` processes: kill -9 while a job is deferred or mid-kickoff, `ork resume`, signals,
`ork jobs`, and credentials never reaching storage or output."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml
from http_harness import TOKEN, HttpProject, job_task
from http_test_server import wait_until


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_while_deferred_then_resume_completes_with_exactly_one_kickoff(
    proj: HttpProject, procs: list[subprocess.Popen[str]]
) -> None:
    proj.workflow({"query": job_task(job={"outcome": "forever"}, poll_interval=0.1), "after": {"executor": "api", "depends_on": ["query"], "url": "/echo", "query": {"rows": "{{ upstream.query.rows }}"}, "output_path": "query.rows"}})
    rec = proj.server.recorder
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)
    wait_until(lambda: "r1" in rec.jobs and rec.jobs["r1"].status_requests >= 2, what="the job being polled")
    _kill(proc)

    code, out, err = proj.ork_done("jobs", "--json")
    assert code == 0, err
    (job,) = json.loads(out)
    assert (job["task"], job["executor"], job["tracker"], job["external_id"]) == ("query", "jobs", "http_async", "r1")
    assert job["link"] == f"{proj.server.url}/jobs/r1" and job["deferred_since"] and job["last_poll"]

    polls_before = rec.jobs["r1"].status_requests
    rec.jobs["r1"].spec["outcome"] = "succeed"  # the external job finishes while ork is down
    code, out, err = proj.ork_done("resume")
    assert code == 0, out + err
    assert rec.kickoffs == 1 and len(rec.jobs) == 1
    assert rec.jobs["r1"].status_requests > polls_before
    assert rec.cancels == []  # a restart never cancels
    storage = proj.storage()
    (run,) = storage.list_runs()
    record = storage.get_run(run.id)
    storage.close()
    assert record.status == "success"
    assert record.tasks["query"].output == {"rows": 42, "job": "r1"} and record.tasks["after"].output == "42"
    assert record.tasks["query"].attempt == 1


@pytest.mark.parametrize("keys_in", ["workflow", "config_file"])
def test_kill_9_mid_kickoff_then_resume_adopts_the_job_by_key(
    proj: HttpProject, procs: list[subprocess.Popen[str]], keys_in: str
) -> None:
    task = job_task(job={"delay": 30, "polls": 1}, lookup_url="/jobs?key={{ ork.idempotency_key }}")
    if keys_in == "config_file":
        executor = task.pop("executor")
        (proj.dir / "query.yaml").write_text(yaml.safe_dump(task))
        task = {"executor": executor, "config_file": "query.yaml"}
    proj.workflow({"query": task})
    rec = proj.server.recorder
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)
    wait_until(lambda: "r1" in rec.jobs, what="the kickoff to reach the server")
    _kill(proc)  # the server started the job, ork never heard back
    code, out, err = proj.ork_done("resume")
    assert code == 0, out + err
    assert rec.kickoffs == 1 and rec.count("GET /jobs") == 1 + 2  # one lookup, two status polls
    storage = proj.storage()
    (run,) = storage.list_runs()
    assert storage.get_run(run.id).tasks["query"].output == {"rows": 42, "job": "r1"}
    storage.close()


def test_kill_9_mid_kickoff_without_lookup_resends_the_same_idempotency_key(
    proj: HttpProject, procs: list[subprocess.Popen[str]]
) -> None:
    proj.workflow({"query": job_task(job={"delay": 30, "polls": 1})})
    rec = proj.server.recorder
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)
    wait_until(lambda: "r1" in rec.jobs, what="the kickoff to reach the server")
    _kill(proc)
    code, out, err = proj.ork_done("resume")
    assert code == 0, out + err
    assert rec.kickoffs == 2 and list(rec.jobs) == ["r1"]  # the server deduplicated by key


def test_kill_9_while_retrying_an_uncertain_kickoff_then_resume_still_adopts_the_job(
    proj: HttpProject, procs: list[subprocess.Popen[str]]
) -> None:
    """The kickoff timed out on the client after the server took the job; ork dies before the retry."""
    proj.configure(timeout=1)
    lookup = "/jobs?key={{ ork.idempotency_key }}"
    proj.workflow({"query": job_task(job={"delay": 30, "polls": 1}, lookup_url=lookup, retries=1, retry_delay=3)})
    rec = proj.server.recorder
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)

    def retrying() -> bool:
        storage = proj.storage()
        try:
            runs = storage.list_runs()
            return bool(runs) and storage.get_run(runs[0].id).tasks["query"].status == "retrying"
        finally:
            storage.close()

    wait_until(retrying, what="the uncertain kickoff to be committed as retrying")
    _kill(proc)
    code, out, err = proj.ork_done("resume")
    assert code == 0, out + err
    assert rec.kickoffs == 1 and list(rec.jobs) == ["r1"]
    storage = proj.storage()
    (run,) = storage.list_runs()
    record = storage.get_run(run.id)
    storage.close()
    assert record.tasks["query"].output == {"rows": 42, "job": "r1"} and record.tasks["query"].try_number == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_signal_leaves_the_job_running_and_resume_adopts_it(
    proj: HttpProject, procs: list[subprocess.Popen[str]], sig: int
) -> None:
    proj.workflow({"query": job_task(job={"outcome": "forever"}, poll_interval=0.1)})
    rec = proj.server.recorder
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)
    wait_until(lambda: "r1" in rec.jobs and rec.jobs["r1"].status_requests >= 1, what="the job being polled")
    proc.send_signal(sig)
    assert proc.wait(30) == 128 + sig
    assert rec.cancels == []  # a restart must not cancel the external job
    rec.jobs["r1"].spec["outcome"] = "succeed"
    code, out, err = proj.ork_done("resume")
    assert code == 0, out + err
    assert rec.kickoffs == 1 and list(rec.jobs) == ["r1"] and rec.cancels == []
    storage = proj.storage()
    (run,) = storage.list_runs()
    assert storage.get_run(run.id).tasks["query"].output == {"rows": 42, "job": "r1"}
    storage.close()


def _files_hold(folder: Path, *secrets: str) -> list[str]:
    """The files under `folder` (the database, its WAL, logs, artifacts) that contain one of `secrets`."""
    return [
        str(p) for p in folder.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)
    ]


def test_credentials_never_reach_storage_logs_or_output(proj: HttpProject, procs: list[subprocess.Popen[str]]) -> None:
    assert proj.ork_done("runs")[0] == 0  # creates the database: held open below, so the WAL stays to be read
    keep = sqlite3.connect(proj.dir / ".ork" / "ork.db")
    keep.execute("SELECT count(*) FROM runs").fetchall()
    proj.workflow(
        {
            "sync": {"executor": "api", "url": "/echo", "body": {"x": 1}},
            "bad": {"executor": "api", "url": "/status/500"},
            "reflect": {"executor": "api", "url": "/reflect"},  # a 500 whose body echoes the Authorization header
            "reflect_kickoff": job_task(url="/reflect"),
            "async_ok": job_task(job={"polls": 1}),
            "async_fail": job_task(job={"outcome": "fail"}),
            "async_flaky": job_task(job={"errors": 1}),
            "async_timeout": job_task(job={"outcome": "forever"}, timeout=0.5),
        }
    )
    proc = proj.ork("run", "wf.yaml", env={"ORK_TRACE_PLUGINS": "1"})
    procs.append(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "[ork trace]" in err
    seen = proj.server.recorder.headers
    assert sum(h.get("authorization") == f"Bearer {TOKEN}" for h in seen) == len(seen) > 8
    storage = proj.storage()
    (run,) = storage.list_runs()
    shown = [
        proj.ork_done(*args)
        for args in (("runs", "show", run.id, "--json"), ("runs", "show", run.id), ("logs", run.id), ("jobs", "--json"))
    ]
    reflected = storage.get_run(run.id).tasks["reflect"].error or ""
    storage.close()
    assert f"POST {proj.server.url}/jobs -> 202 Accepted" in shown[2][1]
    assert '"Authorization": "***"' in reflected, reflected  # the service did echo it; ork masked it
    assert '\\"Authorization\\": \\"***\\"' in shown[0][1] and '"Authorization": "***"' in out
    texts = [out, err, *(o + e for _, o, e in shown)]
    assert all(TOKEN not in text for text in texts)
    files = {p.name for p in (proj.dir / ".ork").rglob("*") if p.is_file()}
    assert {"ork.db", "ork.db-wal", "ork.db-shm"} <= files, files
    assert (proj.dir / ".ork" / "ork.db-wal").stat().st_size > 0
    assert _files_hold(proj.dir / ".ork", TOKEN) == []
    keep.close()


def test_a_password_in_base_url_is_never_stored_and_polls_still_authenticate(
    proj: HttpProject, procs: list[subprocess.Popen[str]]
) -> None:
    password = "pw-in-the-url-5a1e"
    basic = base64.b64encode(f"ork-user:{password}".encode()).decode()
    with_password = proj.server.url.replace("http://", f"http://ork-user:{password}@")
    proj.configure(base_url=with_password)
    proj.workflow({"job": job_task(job={"polls": 2}), "reflect": {"executor": "api", "url": "/reflect"}})
    code, out, err = proj.ork_done("run", "wf.yaml")
    assert code == 1, out + err  # `reflect` fails; `job` succeeds
    storage = proj.storage()
    (run,) = storage.list_runs()
    record = storage.get_run(run.id)
    storage.close()
    assert record.tasks["job"].status == "success", record.tasks["job"].error
    assert record.tasks["job"].handle is None or password not in json.dumps(record.tasks["job"].handle)
    seen = proj.server.recorder.headers
    polls = [h for h in seen if h.get("authorization", "").startswith("Basic ")]
    assert len(polls) == len(seen) >= 4  # kickoff, status polls, reflect: all authenticated from base_url
    shown = [proj.ork_done(*args) for args in (("runs", "show", run.id, "--json"), ("runs", "show", run.id), ("logs", run.id))]
    texts = [out, err, *(o + e for _, o, e in shown)]
    assert all(password not in text and basic not in text for text in texts)
    assert "ork-user:***@127.0.0.1" in shown[0][1] or "ork-user:***@127.0.0.1" in shown[2][1]
    assert _files_hold(proj.dir / ".ork", password, basic) == []
