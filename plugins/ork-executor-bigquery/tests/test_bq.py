"""Tests of ``ork_executor_bigquery.bq`` through the real google-cloud-bigquery client.

Two back-ends: ``bqemulator`` for real SQL semantics (tables, errors,
parameters), and ``FakeBigQuery`` for what the emulator cannot show (jobs
that stay RUNNING, 409 on a reused id, cancellation, 5xx answers).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
from emulator import bq_emulator
from fake_bigquery import FakeBigQuery
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from ork_executor_bigquery import bq

PROJECT = "test"
LOCATION = "US"


def new_job_id() -> str:
    return f"ork_test_{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------
# Against bqemulator
# ---------------------------------------------------------------------------


def test_emulator_dml_ctas_and_select(
    emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    table = f"{emulator_dataset}.people"
    emulator_client.create_table(
        bigquery.Table(
            table,
            schema=[
                bigquery.SchemaField("id", "INT64"),
                bigquery.SchemaField("name", "STRING"),
            ],
        )
    )

    insert_id = new_job_id()
    submitted = bq.submit_query(
        emulator_client,
        f"INSERT INTO `{table}` (id, name) VALUES (1, 'ada'), (2, 'bob'), (3, 'cy')",
        job_id=insert_id,
        location=LOCATION,
        labels={"ork_task": "load"},
    )
    assert submitted.job_id == insert_id
    assert not submitted.adopted
    status = bq.poll_job(emulator_client, insert_id, LOCATION)
    assert status.state == "succeeded"
    assert status.statement_type == "INSERT"
    assert status.rows_affected == 3
    assert status.error_message is None

    ctas_id = new_job_id()
    bq.submit_query(
        emulator_client,
        f"CREATE TABLE `{emulator_dataset}.big_ids` AS SELECT id * 10 AS x FROM `{table}`",
        job_id=ctas_id,
        location=LOCATION,
    )
    status = bq.poll_job(emulator_client, ctas_id, LOCATION)
    assert status.state == "succeeded"
    assert status.statement_type == "CREATE_TABLE_AS_SELECT"
    assert status.rows_affected == 0  # DDL: no DML count, no result rows
    assert emulator_client.get_table(f"{emulator_dataset}.big_ids").num_rows == 3

    select_id = new_job_id()
    bq.submit_query(
        emulator_client,
        f"SELECT x FROM `{emulator_dataset}.big_ids` WHERE x >= 20 ORDER BY x",
        job_id=select_id,
        location=LOCATION,
    )
    status = bq.poll_job(emulator_client, select_id, LOCATION)
    assert status.state == "succeeded"
    assert status.statement_type == "SELECT"
    assert status.rows_affected == 2
    assert status.bytes_processed == 0  # the emulator never reports bytes
    assert status.console_link == (
        "https://console.cloud.google.com/bigquery"
        f"?project={PROJECT}&j=bq:{LOCATION}:{select_id}&page=queryresults"
    )
    rows = emulator_client.get_job(select_id, location=LOCATION).result()
    assert [row.x for row in rows] == [20, 30]


def test_emulator_syntax_error_surfaces_bigquery_message(
    emulator_client: bigquery.Client,
) -> None:
    job_id = new_job_id()
    submitted = bq.submit_query(
        emulator_client, "SELEC 1", job_id=job_id, location=LOCATION
    )
    # The emulator fails the job at once; real BigQuery may say RUNNING first.
    assert submitted.status.state == "failed"

    status = bq.poll_job(emulator_client, job_id, LOCATION)
    assert status.state == "failed"
    assert status.error_reason == "invalidQuery"
    assert status.error_location == "query"
    assert status.error_message is not None
    assert status.error_message.startswith("Syntax error: Unexpected identifier")
    assert status.error_line == 1
    assert status.error_column is not None


def test_emulator_missing_table_error(
    emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    job_id = new_job_id()
    bq.submit_query(
        emulator_client,
        f"SELECT * FROM `{emulator_dataset}.nope`",
        job_id=job_id,
        location=LOCATION,
    )
    status = bq.poll_job(emulator_client, job_id, LOCATION)
    assert status.state == "failed"
    assert status.error_reason == "notFound"
    assert status.error_message is not None
    assert f"{emulator_dataset}.nope" in status.error_message
    assert status.error_line is None


def test_emulator_query_parameters_round_trip(emulator_client: bigquery.Client) -> None:
    job_id = new_job_id()
    params: dict[str, bq.QueryParameterValue] = {
        "flag": True,
        "n": 41,
        "ratio": 0.25,
        "name": "o'brien",
        "day": dt.date(2024, 2, 29),
        "ids": [1, 2, 3],
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    }
    bq.submit_query(
        emulator_client,
        "SELECT @flag AS flag, @n + 1 AS n, @ratio * 2 AS ratio, @name AS name, "
        "@day AS day, ARRAY_LENGTH(@ids) AS n_ids, @at AS at",
        job_id=job_id,
        location=LOCATION,
        query_parameters=params,
    )
    status = bq.poll_job(emulator_client, job_id, LOCATION)
    assert status.state == "succeeded", status.error_message
    result = emulator_client.get_job(job_id, location=LOCATION).result()
    (row,) = list(result)
    assert row.flag is True
    assert row.n == 42
    assert row.ratio == 0.5
    assert row.name == "o'brien"
    assert row.day == dt.date(2024, 2, 29)
    assert row.n_ids == 3
    assert row.at == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    # BYTES is left out: the emulator does not base64-decode BYTES parameters
    # (it returns the base64 text itself); the type sent is checked on the fake.
    types = {field.name: field.field_type for field in result.schema}
    assert types["flag"] == "BOOLEAN"
    assert types["day"] == "DATE"


def test_emulator_default_dataset(
    emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    bq.submit_query(
        emulator_client,
        f"CREATE TABLE `{emulator_dataset}.t` AS SELECT 1 AS one",
        job_id=new_job_id(),
        location=LOCATION,
    )
    job_id = new_job_id()
    bq.submit_query(
        emulator_client,
        "SELECT one FROM t",
        job_id=job_id,
        location=LOCATION,
        default_dataset=emulator_dataset.split(".", 1)[
            1
        ],  # project taken from the client
    )
    status = bq.poll_job(emulator_client, job_id, LOCATION)
    assert status.state == "succeeded", status.error_message
    assert status.rows_affected == 1


def test_emulator_dry_run(
    emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    bq.submit_query(
        emulator_client,
        f"CREATE TABLE `{emulator_dataset}.t` AS SELECT 1 AS one",
        job_id=new_job_id(),
        location=LOCATION,
    )
    sql = f"SELECT one FROM `{emulator_dataset}.t`"
    # The emulator answers dry runs, but its estimate is always 0 bytes;
    # the value path (a non-zero estimate) is covered against FakeBigQuery.
    assert bq.dry_run_bytes(emulator_client, sql, location=LOCATION) == 0

    submitted = bq.submit_query(
        emulator_client, sql, job_id=new_job_id(), location=LOCATION, dry_run=True
    )
    assert submitted.status.state == "succeeded"
    assert submitted.status.statement_type == "SELECT"

    # A dry run doubles as validation: bad SQL is refused with BigQuery's message.
    with pytest.raises(api_exceptions.BadRequest, match="Syntax error"):
        bq.dry_run_bytes(emulator_client, "SELEC 1", location=LOCATION)


def test_emulator_cancel_of_finished_and_unknown_job(
    emulator_client: bigquery.Client,
) -> None:
    job_id = new_job_id()
    bq.submit_query(emulator_client, "SELECT 1", job_id=job_id, location=LOCATION)
    bq.cancel_job(emulator_client, job_id, LOCATION)  # already DONE: nothing to do
    assert bq.poll_job(emulator_client, job_id, LOCATION).state == "succeeded"
    bq.cancel_job(emulator_client, "no_such_job", LOCATION)  # 404 is fine
    with pytest.raises(api_exceptions.NotFound):
        bq.poll_job(emulator_client, "no_such_job", LOCATION)


def test_emulator_process_is_gone_after_exit() -> None:
    with bq_emulator(PROJECT) as emu:
        pid = emu.pid
        port = int(emu.api_endpoint.rsplit(":", 1)[1])
        os.kill(pid, 0)  # alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its process group either
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


# ---------------------------------------------------------------------------
# Against FakeBigQuery
# ---------------------------------------------------------------------------


def test_running_job_survives_tracker_restart(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    submitted = bq.submit_query(
        fake_client, "SELECT 1 AS a", job_id=job_id, location=LOCATION
    )
    assert submitted.status.state == "running"
    assert bq.poll_job(fake_client, job_id, LOCATION).state == "running"
    fake_client.close()

    # "Restart": a new process would build a new client from persisted config
    # and know nothing but the job id and location.
    restarted = bq.make_client(PROJECT, LOCATION, fake_bq.endpoint, "anonymous")
    try:
        assert bq.poll_job(restarted, job_id, LOCATION).state == "running"
        fake_bq.finish(job_id, rows=[{"a": 1}, {"a": 2}], bytes=2048)
        status = bq.poll_job(restarted, job_id, LOCATION)
    finally:
        restarted.close()
    assert status.state == "succeeded"
    assert status.rows_affected == 2
    assert status.bytes_processed == 2048
    assert status.bytes_billed == 2048
    assert fake_bq.insert_calls == 1
    assert fake_bq.jobs_created == 1
    assert fake_bq.get_calls == 3
    assert fake_bq.results_calls == 1  # the row count of the finished SELECT


def test_reused_job_id_is_adopted_not_rerun(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    sql = "UPDATE ds.t SET x = 1 WHERE TRUE"
    first = bq.submit_query(fake_client, sql, job_id=job_id, location=LOCATION)
    assert not first.adopted

    # A retry after a crash submits the same attempt again.
    second = bq.submit_query(fake_client, sql, job_id=job_id, location=LOCATION)
    assert second.adopted
    assert second.job_id == job_id
    assert second.status.state == "running"
    assert fake_bq.insert_calls == 2  # the insert was tried ...
    assert fake_bq.jobs_created == 1  # ... but the query runs once
    assert fake_bq.get_calls == 1  # the adoption

    fake_bq.finish(job_id, rows=7, bytes=100)
    status = bq.poll_job(fake_client, job_id, LOCATION)
    assert (status.state, status.rows_affected, status.statement_type) == (
        "succeeded",
        7,
        "UPDATE",
    )
    assert fake_bq.results_calls == 0  # DML: the count is in the job itself


def test_lost_insert_response_is_retried_and_adopted(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    # BigQuery created the job, but the answer was a 503: the client retries
    # with the same id, gets 409, and the job is adopted.
    fake_bq.fail_next_inserts(1, status=503, after_create=True)
    job_id = new_job_id()
    result = bq.submit_query(fake_client, "SELECT 1", job_id=job_id, location=LOCATION)
    assert result.adopted
    assert fake_bq.insert_calls == 2
    assert fake_bq.jobs_created == 1


def test_transient_insert_error_is_retried(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    fake_bq.fail_next_inserts(1, status=503)  # rejected before creating
    result = bq.submit_query(
        fake_client, "SELECT 1", job_id=new_job_id(), location=LOCATION
    )
    assert not result.adopted
    assert fake_bq.insert_calls == 2
    assert fake_bq.jobs_created == 1


def test_reused_job_id_for_other_sql_is_refused(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    bq.submit_query(fake_client, "SELECT 1", job_id=job_id, location=LOCATION)
    with pytest.raises(bq.JobIdReusedError):
        bq.submit_query(fake_client, "SELECT 2", job_id=job_id, location=LOCATION)
    adopted = bq.submit_query(
        fake_client,
        "SELECT 2",
        job_id=job_id,
        location=LOCATION,
        check_adopted_sql=False,
    )
    assert adopted.adopted
    assert fake_bq.jobs_created == 1


def test_cancel_is_idempotent(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    bq.submit_query(fake_client, "SELECT 1", job_id=job_id, location=LOCATION)
    bq.cancel_job(fake_client, job_id, LOCATION)
    status = bq.poll_job(fake_client, job_id, LOCATION)
    assert status.state == "failed"
    assert status.error_reason == "stopped"
    assert status.error_message is not None and "cancelled" in status.error_message

    bq.cancel_job(fake_client, job_id, LOCATION)  # already done
    bq.cancel_job(fake_client, "never_submitted", LOCATION)  # unknown
    assert fake_bq.cancel_calls == 3


def test_transient_get_errors_then_recovery(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    bq.submit_query(fake_client, "SELECT 1", job_id=job_id, location=LOCATION)
    fake_bq.finish(job_id, rows=1)
    fake_bq.fail_next_gets(2, status=503)

    # By default a poll does not retry: the tracker backs off itself.
    for _ in range(2):
        with pytest.raises(api_exceptions.ServiceUnavailable) as caught:
            bq.poll_job(fake_client, job_id, LOCATION)
        assert bq.is_transient(caught.value)
    assert bq.poll_job(fake_client, job_id, LOCATION).state == "succeeded"
    assert fake_bq.get_calls == 3

    # Or the caller hands in a retry and one call rides the errors out.
    fake_bq.fail_next_gets(2, status=503)
    quick = Retry(predicate=bq.is_transient, initial=0.01, maximum=0.05, timeout=10)
    assert bq.poll_job(fake_client, job_id, LOCATION, retry=quick).state == "succeeded"
    assert fake_bq.get_calls == 6


def test_failure_reports_message_and_position(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    bq.submit_query(
        fake_client, "SELECT x\nFROM t\nWHERE", job_id=job_id, location=LOCATION
    )
    message = "Syntax error: Unexpected end of script at [3:6]"
    fake_bq.finish(job_id, error=message)
    status = bq.poll_job(fake_client, job_id, LOCATION)
    assert status.state == "failed"
    assert status.error_message == message
    assert (status.error_line, status.error_column) == (3, 6)
    assert status.error_location == "query"
    assert status.rows_affected == 0
    assert not status.retryable_failure


def test_backend_failure_is_retryable(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    bq.submit_query(fake_client, "SELECT 1", job_id=job_id, location=LOCATION)
    fake_bq.finish(
        job_id, error={"reason": "jobBackendError", "message": "The job failed."}
    )
    status = bq.poll_job(fake_client, job_id, LOCATION)
    assert status.state == "failed"
    assert status.retryable_failure


def test_job_finishes_after_delay(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    bq.submit_query(
        fake_client, "DELETE FROM ds.t WHERE TRUE", job_id=job_id, location=LOCATION
    )
    fake_bq.finish(job_id, rows=4, after=0.5)
    assert bq.poll_job(fake_client, job_id, LOCATION).state == "running"
    result = fake_client.get_job(job_id, location=LOCATION).result(timeout=10)
    assert result.num_dml_affected_rows == 4
    assert bq.poll_job(fake_client, job_id, LOCATION).rows_affected == 4


def test_auto_finish_after_delay() -> None:
    with FakeBigQuery(project=PROJECT, auto_finish_after=0.5) as fake:
        client = bq.make_client(PROJECT, LOCATION, fake.endpoint, "anonymous")
        try:
            job_id = new_job_id()
            bq.submit_query(client, "SELECT 1", job_id=job_id)
            assert bq.poll_job(client, job_id).state == "running"
            time.sleep(0.6)
            status = bq.poll_job(client, job_id)
        finally:
            client.close()
    assert status.state == "succeeded"
    assert status.rows_affected == 0


def test_wrong_location_is_not_found_and_not_transient(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    submitted = bq.submit_query(fake_client, "SELECT 1", job_id=job_id, location="EU")
    assert submitted.location == "EU"
    assert "j=bq:EU:" in submitted.console_link
    assert bq.poll_job(fake_client, job_id, "EU").state == "running"
    with pytest.raises(api_exceptions.NotFound) as caught:
        bq.poll_job(fake_client, job_id, "US")
    assert not bq.is_transient(caught.value)


def test_job_configuration_is_sent(
    fake_bq: FakeBigQuery, fake_client: bigquery.Client
) -> None:
    job_id = new_job_id()
    labels = {"ork_dag": "daily", "ork_task": "agg"}
    bq.submit_query(
        fake_client,
        "SELECT @day AS d",
        job_id=job_id,
        location=LOCATION,
        labels=labels,
        query_parameters={
            "day": dt.date(2024, 1, 2),
            "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "civil": dt.datetime(2024, 1, 2, 3, 4, 5),
            "flag": False,
            "n": 3,
            "price": decimal.Decimal("1.50"),
        },
        destination="ds.out",
        write_disposition="truncate",
        default_dataset="other_project.ds",
        maximum_bytes_billed=10**9,
    )
    job = fake_bq.job(job_id)
    assert job.labels == labels
    query = job.query_config
    assert query["destinationTable"] == {
        "projectId": PROJECT,
        "datasetId": "ds",
        "tableId": "out",
    }
    assert query["writeDisposition"] == "WRITE_TRUNCATE"
    assert query["defaultDataset"] == {"projectId": "other_project", "datasetId": "ds"}
    assert query["maximumBytesBilled"] == str(10**9)
    assert query["useLegacySql"] is False
    assert query["parameterMode"] == "NAMED"
    types = {p["name"]: p["parameterType"]["type"] for p in query["queryParameters"]}
    assert types == {
        "day": "DATE",
        "at": "TIMESTAMP",
        "civil": "DATETIME",
        "flag": "BOOL",
        "n": "INT64",
        "price": "NUMERIC",
    }
    # Labels come back on the job, as BigQuery stores them.
    assert fake_client.get_job(job_id, location=LOCATION).labels == labels


def test_write_disposition_needs_destination(fake_client: bigquery.Client) -> None:
    with pytest.raises(ValueError, match="destination"):
        bq.submit_query(
            fake_client,
            "SELECT 1",
            job_id=new_job_id(),
            write_disposition="WRITE_APPEND",
        )
    with pytest.raises(ValueError, match="write_disposition"):
        bq.submit_query(
            fake_client,
            "SELECT 1",
            job_id=new_job_id(),
            destination="d.t",
            write_disposition="x",
        )


def test_dry_run_bytes(fake_bq: FakeBigQuery, fake_client: bigquery.Client) -> None:
    fake_bq.dry_run_bytes = 123_456_789
    assert (
        bq.dry_run_bytes(fake_client, "SELECT * FROM ds.big", location=LOCATION)
        == 123_456_789
    )
    assert fake_bq.jobs_created == 0  # a dry run is not a job
    (config,) = fake_bq.dry_runs
    assert config["dryRun"] is True
    assert config["query"]["useQueryCache"] is False  # a cache hit would estimate 0


def test_scheme_less_endpoint(fake_bq: FakeBigQuery) -> None:
    host_port = fake_bq.endpoint.removeprefix("http://")
    client = bq.make_client(PROJECT, LOCATION, host_port, "anonymous")
    try:
        job_id = new_job_id()
        bq.submit_query(client, "SELECT 1", job_id=job_id)
        assert bq.poll_job(client, job_id).location == LOCATION  # the client's default
    finally:
        client.close()


@pytest.fixture
def service_account_file(tmp_path: Path, fake_bq: FakeBigQuery) -> Path:
    """A real-format service-account key whose token endpoint is the fake."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "test-key",
                "private_key": pem,
                "client_email": "ork-test@test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": fake_bq.token_uri,
            }
        )
    )
    return path


def test_service_account_credentials(
    fake_bq: FakeBigQuery, service_account_file: Path
) -> None:
    client = bq.make_client(
        PROJECT, LOCATION, fake_bq.endpoint, str(service_account_file)
    )
    try:
        bq.submit_query(client, "SELECT 1", job_id=new_job_id())
    finally:
        client.close()
    assert fake_bq.token_calls == 1
    assert fake_bq.authorizations[-1] == "Bearer fake-access-token"


def test_default_credentials(
    fake_bq: FakeBigQuery, service_account_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADC from the environment; and never the metadata server (off-machine).
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(service_account_file))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    client = bq.make_client(PROJECT, LOCATION, fake_bq.endpoint, "default")
    try:
        bq.submit_query(client, "SELECT 1", job_id=new_job_id())
    finally:
        client.close()
    assert fake_bq.authorizations[-1] == "Bearer fake-access-token"


def test_bad_credentials_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="anonymous"):
        bq.make_client(PROJECT, LOCATION, "http://127.0.0.1:1", "/no/such/key.json")
    other = tmp_path / "external.json"
    other.write_text(json.dumps({"type": "external_account", "audience": "x"}))
    with pytest.raises(ValueError, match="external_account"):
        bq.make_client(PROJECT, LOCATION, "http://127.0.0.1:1", str(other))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        bq.make_client(PROJECT, LOCATION, "http://127.0.0.1:1", str(broken))


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api_exceptions.ServiceUnavailable("x"), True),
        (api_exceptions.InternalServerError("x"), True),
        (api_exceptions.TooManyRequests("x"), True),
        (api_exceptions.BadGateway("x"), True),
        (api_exceptions.GatewayTimeout("x"), True),
        (api_exceptions.Forbidden("x", errors=[{"reason": "rateLimitExceeded"}]), True),
        (api_exceptions.BadRequest("x", errors=[{"reason": "backendError"}]), True),
        (api_exceptions.Forbidden("x", errors=[{"reason": "accessDenied"}]), False),
        (api_exceptions.Forbidden("x", errors=[{"reason": "quotaExceeded"}]), False),
        (api_exceptions.BadRequest("x", errors=[{"reason": "invalidQuery"}]), False),
        (api_exceptions.NotFound("x"), False),
        (api_exceptions.Conflict("x"), False),
        (
            api_exceptions.RetryError(
                "gave up", api_exceptions.ServiceUnavailable("x")
            ),
            True,
        ),
        (api_exceptions.RetryError("gave up", api_exceptions.NotFound("x")), False),
        (requests.exceptions.ConnectionError("reset"), True),
        (requests.exceptions.ReadTimeout("slow"), True),
        (requests.exceptions.SSLError("bad cert"), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (auth_exceptions.TransportError("dns"), True),
        (auth_exceptions.RefreshError("invalid_grant"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient(exc: BaseException, expected: bool) -> None:
    assert bq.is_transient(exc) is expected


def test_is_transient_follows_explicit_cause_only() -> None:
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = ConnectionResetError()
    assert bq.is_transient(wrapped)
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise KeyError("unrelated bug") from None
    except KeyError as exc:
        assert not bq.is_transient(exc)


def test_query_parameter_inference() -> None:
    params = bq.to_query_parameters(
        {
            "b": True,
            "i": 1,
            "f": 1.5,
            "s": "x",
            "d": dt.date(2024, 1, 1),
            "ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            "dt": dt.datetime(2024, 1, 1),
            "raw": b"\x00",
            "nums": [1, 2.5],
            "given": bigquery.ScalarQueryParameter("given", "GEOGRAPHY", "POINT(0 0)"),
        }
    )
    kinds = {
        p.name: p.type_
        if isinstance(p, bigquery.ScalarQueryParameter)
        else f"ARRAY<{p.array_type}>"
        for p in params
    }
    assert kinds == {
        "b": "BOOL",
        "i": "INT64",
        "f": "FLOAT64",
        "s": "STRING",
        "d": "DATE",
        "ts": "TIMESTAMP",
        "dt": "DATETIME",
        "raw": "BYTES",
        "nums": "ARRAY<FLOAT64>",
        "given": "GEOGRAPHY",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "cannot be inferred"),
        ([], "empty list"),
        ([1, "a"], "mixes"),
        ({"a": 1}, "unsupported type"),
    ],
)
def test_query_parameter_errors(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        bq.to_query_parameters({"p": value})


def test_console_link_escapes() -> None:
    assert bq.console_link("my-proj", "europe-west2", "job_1") == (
        "https://console.cloud.google.com/bigquery"
        "?project=my-proj&j=bq:europe-west2:job_1&page=queryresults"
    )
