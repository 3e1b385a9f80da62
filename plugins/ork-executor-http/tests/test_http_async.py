"""The `http_async` executor and tracker against a real server: kickoff, deferral, polls, cancel."""

from __future__ import annotations

import time

from http_harness import HttpProject, job_task


def test_kickoff_defers_and_the_polled_result_is_the_output(proj: HttpProject) -> None:
    result, run = proj.run(
        {
            "query": job_task(job={"polls": 2}),
            "report": {"executor": "api", "depends_on": ["query"], "url": "/echo", "query": {"rows": "{{ upstream.query.rows }}"}, "output_path": "query.rows"},
        }
    )
    assert result.status == "success", run.tasks["query"].error
    query = run.tasks["query"]
    assert query.output == {"rows": 42, "job": "r1"}
    assert run.tasks["report"].output == "42"
    assert (query.external_id, query.link, query.tracker) == ("r1", f"{proj.server.url}/jobs/r1", "http_async")
    assert query.handle is not None and query.handle["status_url"] == f"{proj.server.url}/jobs/r1"
    rec = proj.server.recorder
    assert rec.kickoffs == 1 and rec.jobs["r1"].status_requests == 3
    assert rec.jobs["r1"].key == query.idempotency_key
    assert rec.cancels == []


def test_failed_job_fails_the_task_with_its_error(proj: HttpProject) -> None:
    result, run = proj.run({"query": job_task(job={"polls": 1, "outcome": "fail"})})
    assert result.status == "failed"
    assert run.tasks["query"].error == "job r1 ended in state 'error': disk full"
    assert proj.server.recorder.cancels == []


def test_status_endpoint_that_errors_a_few_times_then_recovers(proj: HttpProject) -> None:
    result, run = proj.run({"query": job_task(job={"errors": 3, "polls": 1})})
    assert result.status == "success", run.tasks["query"].error
    assert run.tasks["query"].poll_failures == 0 and run.tasks["query"].last_poll_error is None
    assert proj.server.recorder.jobs["r1"].status_requests == 5


def test_status_endpoint_that_keeps_failing_fails_the_task_with_the_last_error(proj: HttpProject) -> None:
    proj.configure(max_poll_failures=3, max_backoff=0.1)
    result, run = proj.run({"query": job_task(job={"errors": 100})})
    assert result.status == "failed"
    assert run.tasks["query"].error == (
        "polling failed 3 times in a row; last error: HttpError: status of job r1: "
        f"GET {proj.server.url}/jobs/r1 returned 500 Internal Server Error (expected a 2xx status); "
        'body: {"error": "status backend unavailable"}'
    )
    assert proj.server.recorder.cancels == ["r1"]


def test_job_that_never_ends_is_failed_by_the_task_timeout_and_cancelled(proj: HttpProject) -> None:
    started = time.monotonic()
    result, run = proj.run({"query": job_task(job={"outcome": "forever"}, timeout=0.6)})
    assert time.monotonic() - started < 5
    assert result.status == "failed"
    assert run.tasks["query"].error == "timed out after 0.6s (the external job was cancelled)"
    rec = proj.server.recorder
    assert rec.cancels == ["r1"] and rec.count("DELETE /jobs") == 1
    assert rec.jobs["r1"].status_requests >= 5


def test_timeout_without_a_cancel_url_says_the_job_may_still_run(proj: HttpProject) -> None:
    result, run = proj.run({"query": job_task(job={"outcome": "forever"}, timeout=0.3, cancel_url=None)})
    assert run.tasks["query"].error == (
        "timed out after 0.3s; cancelling the http_async job failed: CancelNotConfigured: "
        "the task has no cancel_url, so job r1 was not cancelled and may still be running"
    )


def test_a_retry_after_a_failed_job_is_a_new_kickoff_with_a_new_key(proj: HttpProject) -> None:
    result, run = proj.run({"query": job_task(job={"outcome": "fail"}, retries=1)})
    assert result.status == "failed" and run.tasks["query"].attempt == 2
    rec = proj.server.recorder
    assert rec.kickoffs == 2 and set(rec.jobs) == {"r1", "r2"}
    assert rec.jobs["r1"].key != rec.jobs["r2"].key == run.tasks["query"].idempotency_key


def test_kickoff_without_a_run_id_fails_clearly(proj: HttpProject) -> None:
    result, run = proj.run({"query": job_task(run_id_path="job.id")})
    assert run.tasks["query"].error == (
        "run_id_path 'job.id': no 'job' at the top of the response JSON, which has an object with keys: run, accepted"
    )


def test_kickoff_refused_fails_without_deferring(proj: HttpProject) -> None:
    result, run = proj.run({"query": job_task(url="/status/409")})
    assert run.tasks["query"].error == (
        f"kickoff: POST {proj.server.url}/status/409 returned 409 Conflict (expected a 2xx status); "
        'body: {"error": "you asked for 409"}'
    )
    assert run.tasks["query"].tracker is None


def test_many_jobs_share_one_connection_pool_and_batches(proj: HttpProject) -> None:
    result, run = proj.run({f"q{i}": job_task(job={"polls": 2}) for i in range(60)})
    assert result.status == "success"
    rec = proj.server.recorder
    assert rec.kickoffs == 60 and all(job.status_requests == 3 for job in rec.jobs.values())


def test_kickoff_that_times_out_after_arriving_is_adopted_on_the_retry_not_sent_again(proj: HttpProject) -> None:
    """The server accepts the job, then answers after the client gave up: one job, not two."""
    proj.configure(timeout=1)
    lookup = "/jobs?key={{ ork.idempotency_key }}"
    result, run = proj.run({"query": job_task(job={"delay": 30, "polls": 1}, lookup_url=lookup, retries=1)})
    assert result.status == "success", run.tasks["query"].error
    rec = proj.server.recorder
    assert rec.kickoffs == 1 and list(rec.jobs) == ["r1"]
    query = run.tasks["query"]
    assert query.output == {"rows": 42, "job": "r1"} and query.attempt == 2 and query.try_number == 1
    assert rec.jobs["r1"].key == query.idempotency_key
    storage = proj.storage()
    first, second = storage.attempts(run.id)
    storage.close()
    assert (first.status, first.try_number, second.status, second.try_number) == ("failed", 1, "success", 1)
    assert first.error is not None
    assert first.error.startswith(f"kickoff: POST {proj.server.url}/jobs got no response within 1s")
    assert "kickoff uncertain" in first.error and query.idempotency_key in first.error


def test_kickoff_that_times_out_without_a_lookup_url_is_resent_with_the_same_key(proj: HttpProject) -> None:
    proj.configure(timeout=1)
    result, run = proj.run({"query": job_task(job={"delay": 30, "polls": 1}, retries=1)})
    assert result.status == "success", run.tasks["query"].error
    rec = proj.server.recorder
    assert rec.kickoffs == 2 and list(rec.jobs) == ["r1"]  # the server deduplicated by key
    assert run.tasks["query"].try_number == 1


def test_a_gateway_error_on_kickoff_is_uncertain_and_spends_the_retries(proj: HttpProject) -> None:
    lookup = "/jobs?key={{ ork.idempotency_key }}"
    result, run = proj.run({"query": job_task(url="/status/502", lookup_url=lookup, retries=2)})
    assert result.status == "failed" and run.tasks["query"].attempt == 3
    rec = proj.server.recorder
    assert rec.count("POST /status") == 3 and rec.count("GET /jobs") == 2  # each retry looked up first
    assert {h.get("idempotency-key") for h in rec.headers if h.get("idempotency-key")} == {run.tasks["query"].idempotency_key}
    assert "502 Bad Gateway" in (run.tasks["query"].error or "")


def test_a_kickoff_that_surely_did_not_arrive_is_an_ordinary_failure(proj: HttpProject) -> None:
    """Connection refused: nothing reached a service, so the retry is a new try with a new key."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens here once the socket is closed
    lookup = "/jobs?key={{ ork.idempotency_key }}"
    result, run = proj.run({"query": job_task(url=f"http://127.0.0.1:{closed}/jobs", lookup_url=lookup, retries=1)})
    assert result.status == "failed" and run.tasks["query"].try_number == 2
    assert "ConnectError" in (run.tasks["query"].error or "") and "uncertain" not in (run.tasks["query"].error or "")
    assert proj.server.recorder.count("GET /jobs") == 0  # no lookup: nothing to adopt
