"""Tests of ork_executor_cloudrun.api with the real google-cloud-run REST client against FakeCloudRun.

The point is to exercise the genuine client code path (URL templates, JSON parsing,
operation handling, error mapping), so nothing from ``run_v2`` is mocked.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from fake_cloudrun import FakeCloudRun
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import json_format

from ork_executor_cloudrun import api
from ork_executor_cloudrun.api import (
    CloudRunClients,
    CloudRunConfigError,
    CloudRunError,
    CloudRunNotFoundError,
    CloudRunPermissionDeniedError,
    CloudRunTransientError,
    ExecutionStatus,
)

PROJECT = "ork-test"  # same as the conftest fixtures
REGION = "europe-west1"
JOB_PREFIX = f"projects/{PROJECT}/locations/{REGION}/jobs"
KEY = "ORK_IDEMPOTENCY_KEY"


def wait_terminal(clients: CloudRunClients, name: str, timeout_s: float = 5.0) -> ExecutionStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = api.get_execution_status(clients, name)
        if status.terminal:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {name} still {status.state} after {timeout_s}s")
        time.sleep(0.05)


# ------------------------------------------------------------------- success path


def test_run_succeeds_and_status_evolves(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("hello", duration_s=0.5)
    name = api.run_job(
        clients,
        "hello",
        args=["--task", "extract"],
        env={KEY: "k-1", "ORK_RUN_ID": "r1"},
        task_count=2,
        timeout_s=900,
    )
    assert name.startswith(f"{JOB_PREFIX}/hello/executions/hello-")

    first = api.get_execution_status(clients, name)
    assert first.state == "running"
    assert first.completion_time is None
    assert first.task_count == 2
    assert first.running_count == 2

    final = wait_terminal(clients, name)
    assert final.state == "succeeded"
    assert (final.succeeded_count, final.failed_count, final.cancelled_count, final.running_count) == (2, 0, 0, 0)
    assert final.start_time is not None and final.completion_time is not None
    assert datetime.fromisoformat(final.completion_time) > datetime.fromisoformat(final.start_time)
    assert final.log_uri.startswith("https://console.cloud.google.com/logs/")
    execution_id = name.rsplit("/", 1)[-1]
    assert final.console_link == (
        f"https://console.cloud.google.com/run/jobs/executions/details/{REGION}/{execution_id}/tasks?project={PROJECT}"
    )
    assert final.execution_name == name

    # What went over the wire, byte for byte as JSON.
    (run_request,) = [r for r in fake_cloudrun.requests if r.method == "POST"]
    assert run_request.path == f"/v2/{JOB_PREFIX}/hello:run"
    assert run_request.body == {
        "overrides": {
            "containerOverrides": [
                {
                    "args": ["--task", "extract"],
                    "env": [{"name": KEY, "value": "k-1"}, {"name": "ORK_RUN_ID", "value": "r1"}],
                }
            ],
            "taskCount": 2,
            "timeout": "900s",
        }
    }
    assert run_request.query == {"$alt": ["json;enum-encoding=int"]}
    # The overrides are visible on the execution, where adoption looks for them.
    container = fake_cloudrun.execution_json(name)["template"]["containers"][0]
    assert container["args"] == ["--task", "extract"]
    assert {"name": KEY, "value": "k-1"} in container["env"]


def test_run_job_does_not_wait_for_the_operation(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("forever", duration_s=None)
    started = time.monotonic()
    name = api.run_job(clients, "forever")
    assert time.monotonic() - started < 5  # waiting would mean forever: the job never ends
    assert fake_cloudrun.operation_get_calls == 0
    assert api.get_execution_status(clients, name).state == "running"
    (run_request,) = [r for r in fake_cloudrun.requests if r.method == "POST"]
    assert run_request.body == {}  # nothing overridden: the job's own config applies


def test_job_args_and_env_are_merged(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("merge", args=["default"], env={"A": "job", "B": "job"})
    kept = api.run_job(clients, "merge", env={"B": "override"})
    cleared = api.run_job(clients, "merge", args=[])
    kept_container = fake_cloudrun.execution_json(kept)["template"]["containers"][0]
    assert kept_container["args"] == ["default"]
    assert kept_container["env"] == [{"name": "A", "value": "job"}, {"name": "B", "value": "override"}]
    assert "args" not in fake_cloudrun.execution_json(cleared)["template"]["containers"][0]


# --------------------------------------------------------------------- failures


def test_failed_execution_surfaces_message(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("boom", duration_s=0.2, fail=True, fail_message="exit status 3: kaboom")
    name = api.run_job(clients, "boom")
    status = wait_terminal(clients, name)
    assert status.state == "failed"
    assert "kaboom" in status.message
    assert status.failed_count == 1 and status.succeeded_count == 0
    assert status.completion_time is not None


def test_partial_failure_of_multi_task_execution(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("shards", duration_s=0.2, fail_tasks=[2], task_count=3)
    status = wait_terminal(clients, api.run_job(clients, "shards"))
    assert status.state == "failed"
    assert (status.succeeded_count, status.failed_count) == (2, 1)
    assert "task2" in status.message


def test_task_timeout_fails_execution(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("slow", duration_s=30)
    status = wait_terminal(clients, api.run_job(clients, "slow", timeout_s=0.2))
    assert status.state == "failed"
    assert "timeout" in status.message


# ----------------------------------------------------------------- cancellation


def test_cancel_is_idempotent_and_reported(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("forever", duration_s=None, cancel_delay_s=0.4)
    name = api.run_job(clients, "forever")
    assert api.get_execution_status(clients, name).state == "running"

    api.cancel_execution(clients, name)
    api.cancel_execution(clients, name)  # a second request while cancelling is fine
    assert api.get_execution_status(clients, name).state == "running"  # still cancelling

    status = wait_terminal(clients, name)
    assert status.state == "cancelled"
    assert status.cancelled_count == 1 and status.failed_count == 0
    assert status.completion_time is not None
    assert "cancel" in status.message.lower()

    api.cancel_execution(clients, name)  # and after it is cancelled too
    assert fake_cloudrun.cancel_calls == 3
    assert api.get_execution_status(clients, name).state == "cancelled"


def test_cancel_of_finished_or_missing_execution_is_a_no_op(
    fake_cloudrun: FakeCloudRun, clients: CloudRunClients
) -> None:
    fake_cloudrun.add_job("quick", duration_s=0.2)
    name = api.run_job(clients, "quick")
    assert wait_terminal(clients, name).state == "succeeded"
    api.cancel_execution(clients, name)  # the API answers 400 FAILED_PRECONDITION here
    assert api.get_execution_status(clients, name).state == "succeeded"

    api.cancel_execution(clients, f"{JOB_PREFIX}/quick/executions/quick-zzzzz")  # 404
    assert fake_cloudrun.cancel_calls == 2


# ------------------------------------------------------------- transient errors


def test_503_while_polling_is_transient_then_recovers(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("flaky", duration_s=0.2)
    name = api.run_job(clients, "flaky")
    fake_cloudrun.fail_next_gets(2, code=503)
    for _ in range(2):
        with pytest.raises(CloudRunTransientError) as info:
            api.get_execution_status(clients, name)
        assert info.value.code == 503
        assert info.value.retryable
        assert info.value.execution == name
    assert wait_terminal(clients, name).state == "succeeded"
    assert fake_cloudrun.get_calls >= 3


@pytest.mark.parametrize("code", [429, 500, 503, 504])
def test_retryable_codes_map_to_transient(fake_cloudrun: FakeCloudRun, clients: CloudRunClients, code: int) -> None:
    fake_cloudrun.add_job("flaky", duration_s=0.2)
    name = api.run_job(clients, "flaky")
    fake_cloudrun.fail_next_gets(1, code=code)
    with pytest.raises(CloudRunTransientError):
        api.get_execution_status(clients, name)


def test_slow_answer_hits_the_request_timeout_and_is_transient(fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("slowpoke", duration_s=None)
    c = api.make_clients(PROJECT, REGION, fake_cloudrun.endpoint, "anonymous", request_timeout_s=0.3)
    try:
        name = api.run_job(c, "slowpoke")
        fake_cloudrun.slow_next_gets(1, delay_s=3)
        started = time.monotonic()
        with pytest.raises(CloudRunTransientError):
            api.get_execution_status(c, name)
        assert time.monotonic() - started < 2
        assert api.get_execution_status(c, name).state == "running"
    finally:
        c.close()


def test_unreachable_endpoint_is_transient() -> None:
    fake = FakeCloudRun(project=PROJECT, region=REGION)
    with fake:
        endpoint = fake.endpoint
    # The port is closed now: nothing listens there.
    clients = api.make_clients(PROJECT, REGION, endpoint, "anonymous", request_timeout_s=2.0)
    try:
        with pytest.raises(CloudRunTransientError):
            api.get_execution_status(clients, f"{JOB_PREFIX}/j/executions/j-abcde")
    finally:
        clients.close()


# ------------------------------------------------------- not found / forbidden


def test_job_not_found_names_job_project_and_region(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    with pytest.raises(CloudRunNotFoundError) as info:
        api.run_job(clients, "missing-job", env={KEY: "k"})
    err = info.value
    assert err.code == 404 and err.status == "NOT_FOUND"
    text = str(err)
    assert "missing-job" in text and PROJECT in text and REGION in text
    assert not err.retryable
    assert fake_cloudrun.run_calls == 1

    for call in (
        lambda: api.latest_execution(clients, "missing-job"),
        lambda: api.find_execution_by_env(clients, "missing-job", KEY, "k"),
    ):
        with pytest.raises(CloudRunNotFoundError):
            call()


def test_execution_not_found(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("there")
    ghost = f"{JOB_PREFIX}/there/executions/there-00000"
    with pytest.raises(CloudRunNotFoundError) as info:
        api.get_execution_status(clients, ghost)
    assert "there-00000" in str(info.value)
    assert info.value.execution == ghost


def test_permission_denied(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("secret", forbidden=True)
    with pytest.raises(CloudRunPermissionDeniedError) as info:
        api.run_job(clients, "secret")
    assert info.value.code == 403
    assert "run.jobs.run" in str(info.value)
    assert fake_cloudrun.execution_names("secret") == []

    fake_cloudrun.set_forbidden("secret", False)
    name = api.run_job(clients, "secret")
    fake_cloudrun.set_forbidden("secret", True)
    with pytest.raises(CloudRunPermissionDeniedError) as info:
        api.get_execution_status(clients, name)
    assert "run.executions.get" in str(info.value)


# ------------------------------------------------------------------- adoption


def test_find_by_env_adopts_execution_whose_answer_was_lost(
    fake_cloudrun: FakeCloudRun, clients: CloudRunClients
) -> None:
    fake_cloudrun.add_job("adopt", duration_s=0.2)
    assert api.latest_execution(clients, "adopt") is None
    older = [api.run_job(clients, "adopt", env={KEY: f"old-{i}"}) for i in range(3)]
    marker = api.latest_execution(clients, "adopt")
    assert marker == older[-1]

    # The run reaches Cloud Run, the answer does not reach us (crash, timeout...).
    fake_cloudrun.fail_next_runs(1, code=503, after_create=True)
    with pytest.raises(CloudRunTransientError):
        api.run_job(clients, "adopt", env={KEY: "task-42"})
    for i in range(3):  # other work piles up on the same job afterwards
        api.run_job(clients, "adopt", env={KEY: f"new-{i}"})

    adopted = api.find_execution_by_env(clients, "adopt", KEY, "task-42", newer_than=marker, page_size=2)
    assert adopted is not None
    assert adopted == fake_cloudrun.find_executions_by_env(KEY, "task-42")[0]
    assert fake_cloudrun.run_calls == 7  # adoption ran nothing
    assert fake_cloudrun.list_calls >= 3  # page_size=2 forced pagination

    # Stops at the marker: an older execution with the key is not considered.
    assert api.find_execution_by_env(clients, "adopt", KEY, "old-1", newer_than=marker) is None
    assert api.find_execution_by_env(clients, "adopt", KEY, "old-1") == older[1]
    assert api.find_execution_by_env(clients, "adopt", KEY, "nobody") is None
    assert api.find_execution_by_env(clients, "adopt", KEY, "old-0", max_scanned=3) is None
    assert api.latest_execution(clients, "adopt") == fake_cloudrun.execution_names("adopt")[0]


# ---------------------------------------------------------------------- counters


def test_run_calls_are_counted_per_job_and_in_total(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("a")
    fake_cloudrun.add_job("b")
    for _ in range(3):
        api.run_job(clients, "a")
    api.run_job(clients, "b")
    with pytest.raises(CloudRunNotFoundError):
        api.run_job(clients, "c")
    assert fake_cloudrun.run_calls_by_job == {"a": 3, "b": 1, "c": 1}
    assert fake_cloudrun.run_calls == 5
    assert len(fake_cloudrun.execution_names("a")) == 3


# ----------------------------------------------------------- parallelism, config


def test_parallelism_is_checked_against_the_job(fake_cloudrun: FakeCloudRun, clients: CloudRunClients) -> None:
    fake_cloudrun.add_job("fanout", parallelism=2, task_count=4)
    assert api.run_job(clients, "fanout", parallelism=2)
    with pytest.raises(CloudRunConfigError, match="parallelism"):
        api.run_job(clients, "fanout", parallelism=4)
    assert fake_cloudrun.run_calls == 1


def test_bad_inputs_raise_config_errors(tmp_path: Path, clients: CloudRunClients) -> None:
    with pytest.raises(CloudRunConfigError):
        api.run_job(clients, "Not_A_Job")
    with pytest.raises(CloudRunConfigError):
        api.run_job(clients, "projects/other/locations/us-east1/jobs/x")
    with pytest.raises(CloudRunConfigError):
        api.get_execution_status(clients, "hello-abcde")
    with pytest.raises(CloudRunConfigError):
        api.make_clients(PROJECT, REGION, None, str(tmp_path / "missing.json"))
    assert issubclass(CloudRunConfigError, CloudRunError)


def test_make_clients_with_a_service_account_file(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0" * 40,
        "private_key": pem,
        "client_email": f"ork@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{fake_cloudrun.endpoint}/token",
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    c = api.make_clients(PROJECT, REGION, fake_cloudrun.endpoint, path)
    try:
        from google.oauth2 import service_account

        assert isinstance(c.jobs.transport._credentials, service_account.Credentials)
    finally:
        c.close()
    assert fake_cloudrun.requests == []  # building clients talks to nobody


# --------------------------------------------------------- fidelity of the fake


def test_fake_timeline_with_a_manual_clock() -> None:
    now = [1_700_000_000.0]
    with FakeCloudRun(project=PROJECT, region=REGION, clock=lambda: now[0]) as fake:
        fake.add_job("waves", duration_s=10, task_count=3, parallelism=1, start_delay_s=1)
        c = api.make_clients(PROJECT, REGION, fake.endpoint, "anonymous")
        try:
            name = api.run_job(c, "waves")
            pending = api.get_execution_status(c, name)
            assert (pending.state, pending.start_time, pending.running_count) == ("running", None, 0)
            assert fake.execution_json(name)["conditions"][-1]["state"] == "CONDITION_PENDING"
            now[0] += 12
            mid = api.get_execution_status(c, name)
            assert (mid.running_count, mid.succeeded_count) == (1, 1)
            assert mid.start_time is not None and mid.completion_time is None
            assert fake.execution_json(name)["conditions"][-1]["state"] == "CONDITION_RECONCILING"
            now[0] += 20
            done = api.get_execution_status(c, name)
            assert (done.state, done.succeeded_count, done.running_count) == ("succeeded", 3, 0)
            assert done.completion_time is not None
            assert datetime.fromisoformat(done.completion_time).timestamp() == pytest.approx(1_700_000_031.0)
        finally:
            c.close()


def test_fake_json_parses_strictly_into_the_client_protos(fake_cloudrun: FakeCloudRun) -> None:
    """Unknown fields or bad enum names in the fake's JSON would fail here."""
    fake_cloudrun.add_job("strict", duration_s=None, labels={"team": "data"}, annotations={"note": "x"})
    fake_cloudrun.add_job("strict-fail", duration_s=0.05, fail=True)
    jobs = run_v2.JobsClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": fake_cloudrun.endpoint},
    )
    try:
        op = jobs.run_job(name=f"{JOB_PREFIX}/strict")
        name = op.metadata.name
        for int_enums in (False, True):
            body = fake_cloudrun.execution_json(name, int_enums=int_enums)
            json_format.Parse(json.dumps(body), run_v2.Execution.pb()(), ignore_unknown_fields=False)
        job = jobs.get_job(name=f"{JOB_PREFIX}/strict")
        assert job.latest_created_execution.name == name.rsplit("/", 1)[-1]
        assert job.execution_count == 1

        # The operation's own polling (which the executor does not rely on) works too:
        # the parser is strict, so this checks the Operation envelope and the packed Execution.
        failing = jobs.run_job(name=f"{JOB_PREFIX}/strict-fail")
        with pytest.raises(gexc.GoogleAPICallError, match="failed with message"):
            failing.result(timeout=5)
        ex_client = run_v2.ExecutionsClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": fake_cloudrun.endpoint},
        )
        try:
            cancel_op = ex_client.cancel_execution(name=name)
            cancelled = op.result(timeout=5)  # a cancelled run ends its operation without an error
            assert cancelled.cancelled_count == 1
            assert cancel_op.result(timeout=5).name == name
        finally:
            ex_client.transport.close()
        raw = [r for r in fake_cloudrun.requests if "/operations/" in r.path]
        assert raw and all(r.query == {} for r in raw)  # operations are polled without $alt
    finally:
        jobs.transport.close()

    with pytest.raises(json_format.ParseError):  # sanity: the envelope parser is strict
        json_format.Parse(
            json.dumps({"name": "projects/p/locations/l/operations/o", "surprise": 1}), operations_pb2.Operation()
        )
