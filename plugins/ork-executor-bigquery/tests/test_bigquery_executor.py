"""The ``bigquery`` executor through ork: the seed's workflow, errors, parameters, crashes.

Against ``bqemulator`` for real SQL: the seed's ``warehouse_refresh`` through ``ork run``
(the project's own ``executors/bigquery.py`` and the packaged plugin), template and query
errors, query parameters, dry runs and ``ork bigquery estimate``. Against ``FakeBigQuery``
for what the emulator cannot show: a job still RUNNING across ``kill -9`` and ``ork
resume``, 409 adoption, cancellation on timeout and 503s while polling. Everything goes
through the real google-cloud-bigquery client over HTTP.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from emulator import Emulator, client_environment
from fake_bigquery import FakeBigQuery
from google.cloud import bigquery

from ork import Context, Deferred, TaskError, WorkflowError
from ork.testing import ExecutorConformance, run_task
from ork_core.context import MemorySink, Metrics, TaskLogger
from ork_executor_bigquery.bq import make_client
from ork_executor_bigquery.executor import BigQueryExecutor
from ork_executor_bigquery.models import BigQueryConfig

PROJECT = "test"
REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "warehouse_refresh"
EXAMPLE_PROJECT = "my-gcp-project"
"""The project the seed's ork.yaml names; the emulator serves any project id."""
TIB = 1024**4
ENV_DROPPED = ("ORK_DB", "ORK_PLUGINS", "ORK_DISABLE_PLUGINS", "BIGQUERY_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")


# --------------------------------------------------------------------------- helpers


def ork(*args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ork ARGS`` as a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ork_core", *args],
        cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=timeout,
    )


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    env.update(extra or {})
    return env


def run_id_of(stdout: str) -> str:
    first = stdout.splitlines()[0].split()
    assert first[0] == "run", stdout
    return first[1]


def run_json(run_id: str, cwd: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    shown = ork("runs", "show", run_id, "--json", cwd=cwd, env=env)
    assert shown.returncode == 0, shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def tasks_of(run: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in run["tasks"]}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def fake_config(fake: FakeBigQuery, **extra: Any) -> dict[str, Any]:
    return {"project": PROJECT, "api_endpoint": fake.endpoint, "credentials": "anonymous", "poll_interval": 0.05, **extra}


def emulator_config(emulator: Emulator, **extra: Any) -> dict[str, Any]:
    return {"project": PROJECT, "api_endpoint": emulator.api_endpoint, "credentials": "anonymous", **extra}


def example_module() -> ModuleType:
    """The example's run_local.py, whose data loading the end-to-end tests use as they are."""
    spec = importlib.util.spec_from_file_location("warehouse_refresh_run_local", EXAMPLE / "run_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_example(target: Path, *, plugin: bool) -> Path:
    """The seed's project as it is, or with ``type: bigquery`` (the packaged plugin), nothing else changed."""
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".ork", "__pycache__"))
    if plugin:
        ork_yaml = target / "ork.yaml"
        text = ork_yaml.read_text(encoding="utf-8")
        assert "type: executors.bigquery:BigQueryExecutor" in text
        ork_yaml.write_text(text.replace("type: executors.bigquery:BigQueryExecutor", "type: bigquery"), encoding="utf-8")
    return target


def context(task_config: Mapping[str, Any], folder: Path, sink: MemorySink | None = None) -> Context:
    sink = sink or MemorySink()
    return Context(
        task_name="load", workflow_name="wf", run_id="20240101-000000-abcdef", attempt=1,
        log=TaskLogger(sink, "r", "load", 1), metrics=Metrics(sink, "r", "load", 1),
        task_config=dict(task_config), idempotency_key="ork-20240101-000000-abcdef-load-t1",
        workflow_dir=folder, project_dir=folder,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def warehouse(emulator: Emulator) -> Iterator[bigquery.Client]:
    """The example's datasets and source tables, fresh, in the emulator's ``my-gcp-project``."""
    client = make_client(EXAMPLE_PROJECT, "US", emulator.api_endpoint, "anonymous")
    for dataset in ("source", "staging", "warehouse"):
        client.delete_dataset(f"{EXAMPLE_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
    example_module().load_source_data(emulator.api_endpoint, EXAMPLE_PROJECT)
    yield client
    client.close()


@pytest.fixture
def emulator_env(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    """What makes unmodified google-cloud-bigquery code (the seed's file) use the emulator."""
    return client_environment(emulator.api_endpoint, tmp_path / "credentials")


# --------------------------------------------------------------------------- the seed, end to end


@pytest.mark.parametrize("way", ["own_file", "plugin"])
def test_warehouse_refresh_runs_as_written(
    way: str, tmp_path: Path, warehouse: bigquery.Client, emulator_env: dict[str, str]
) -> None:
    project = copy_example(tmp_path / "project", plugin=way == "plugin")

    done = ork("run", "warehouse_refresh.yaml", cwd=project, env=emulator_env)

    assert done.returncode == 0, done.stdout + done.stderr
    run_id = run_id_of(done.stdout)
    tasks = tasks_of(run_json(run_id, project))
    assert {n: t["status"] for n, t in tasks.items()} == dict.fromkeys(
        ["stage_users", "stage_orders", "build_facts"], "success"
    )
    for task in tasks.values():
        assert task["output"]["bytes_processed"] == 0  # the emulator reports no bytes
        assert task["output"]["estimated_cost_usd"] == 0.0
    if way == "plugin":
        for name, task in tasks.items():
            assert task["output"]["job_id"].startswith("ork-") and name in task["output"]["job_id"]
            assert task["output"]["console_link"].startswith("https://console.cloud.google.com/bigquery")
    rows = warehouse.query("SELECT user_id, name, orders, revenue FROM warehouse.user_facts ORDER BY user_id").result()
    assert [tuple(r.values()) for r in rows] == [(1, "ada", 2, 20.0), (2, "grace", 1, 30.0)]
    staged = warehouse.query("SELECT COUNT(*) AS n FROM staging.users").result()
    assert next(iter(staged)).n == 2  # active, updated within 7 days
    metrics = ork("metrics", run_id, "--json", cwd=project)
    assert metrics.returncode == 0, metrics.stderr
    recorded = {(m["task"], m["name"], m["value"], json.dumps(m["labels"], sort_keys=True)) for m in json.loads(metrics.stdout)}
    assert recorded == {
        (name, "bytes_processed", 0.0, json.dumps({"task": name, "workflow": "warehouse_refresh"}, sort_keys=True))
        for name in tasks
    }


@pytest.mark.parametrize("way", ["own_file", "plugin"])
def test_estimate_dry_runs_every_task_and_runs_nothing(
    way: str, tmp_path: Path, warehouse: bigquery.Client, emulator_env: dict[str, str]
) -> None:
    project = copy_example(tmp_path / "project", plugin=way == "plugin")
    extra = ["--executor", "bigquery"] if way == "own_file" else []

    shown = ork("bigquery", "estimate", "warehouse_refresh.yaml", "--json", *extra, cwd=project, env=emulator_env)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    report = json.loads(shown.stdout)
    assert [t["task"] for t in report["tasks"]] == ["stage_users", "stage_orders", "build_facts"]
    assert all(t["error"] is None and t["bytes_processed"] == 0 for t in report["tasks"])
    assert report["total_estimated_cost_usd"] == 0.0
    tables = {t.table_id for t in warehouse.list_tables(f"{EXAMPLE_PROJECT}.staging")}
    assert tables == set(), "a dry run must not create tables"
    assert not (project / ".ork").exists(), "estimate must not touch ork's state"


# --------------------------------------------------------------------------- errors, parameters, dry runs (emulator)


def test_missing_template_variable_names_file_line_and_variable(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "sql" / "users.sql", "SELECT *\nFROM source.users\nWHERE status = '{{ status }}'\n  AND id > {{ min_id }}\n")
    write(tmp_path / "users.yaml", "file: sql/users.sql\nparams:\n  status: active\n")

    result = run_task(
        "bigquery", config=fake_config(fake_bq), task={"config_file": "users.yaml"}, project_dir=tmp_path
    )

    assert result.status == "failed", result.describe()
    assert result.error is not None
    assert "sql/users.sql:4" in result.error
    assert "'min_id' is undefined" in result.error
    assert "status" in result.error  # the variables that were available
    assert fake_bq.insert_calls == 0


def test_template_beside_its_config_file_is_found_and_a_missing_one_is_explained(tmp_path: Path) -> None:
    write(tmp_path / "tasks" / "count.yaml", "file: count.sql\n")
    write(tmp_path / "tasks" / "count.sql", "SELECT COUNT(*) FROM ds.t\n")
    write(tmp_path / "tasks" / "gone.yaml", "file: sql/gone.sql\n")
    with FakeBigQuery(project=PROJECT, auto_finish_after=0.05) as fake:
        found = run_task("bigquery", config=fake_config(fake), task={"config_file": "tasks/count.yaml"}, project_dir=tmp_path)
        # found missing by `ork validate` (the executor's check), at the config file's line
        with pytest.raises(WorkflowError) as missing:
            run_task("bigquery", config=fake_config(fake), task={"config_file": "tasks/gone.yaml"}, project_dir=tmp_path)

    assert found.status == "success", found.describe()
    error = str(missing.value)
    assert "tasks/gone.yaml:1: file: SQL template 'sql/gone.sql' not found (looked for" in error
    assert str(tmp_path / "sql" / "gone.sql") in error and str(tmp_path / "tasks" / "sql" / "gone.sql") in error
    # at run time (a file removed after validation), the executor says the same
    runner = BigQueryExecutor(BigQueryConfig(project=PROJECT, credentials="anonymous"))
    with pytest.raises(TaskError, match="file: SQL template 'sql/gone.sql' not found; looked for"):
        runner.prepare(str(tmp_path / "tasks" / "gone.yaml"), context({}, tmp_path), {})


def test_validate_finds_template_and_config_file_errors(tmp_path: Path) -> None:
    """`ork validate` (exit 1) and `ork run` (exit 2) catch them without rendering or calling BigQuery."""
    write(tmp_path / "ork.yaml", "executors:\n  bigquery:\n    type: bigquery\n    config: {project: p, credentials: anonymous}\n")
    write(tmp_path / "sql" / "broken.sql", "SELECT 1\nFROM t\nWHERE {% if params.x %} x\n")
    write(tmp_path / "sql" / "fine.sql", "SELECT {{ n }}\n")
    write(tmp_path / "tasks" / "nofile.yaml", "params: {n: 1}\n")
    write(tmp_path / "tasks" / "typo.yaml", "file: sql/fine.sql\nparms: {n: 1}\n")
    write(tmp_path / "tasks" / "broken.yaml", "file: sql/broken.sql\n")
    write(
        tmp_path / "flow.yaml",
        "name: w\ntasks:\n"
        "  a: {executor: bigquery, file: sql/broken.sql}\n"
        "  b: {executor: bigquery, config_file: tasks/broken.yaml}\n"
        "  c: {executor: bigquery, config_file: tasks/nofile.yaml}\n"
        "  d: {executor: bigquery, config_file: tasks/typo.yaml}\n"
        "  e: {executor: bigquery, file: sql/fine.sql, params: {n: 1}}\n",
    )
    validated = ork("validate", "flow.yaml", cwd=tmp_path)
    ran = ork("run", "flow.yaml", cwd=tmp_path)
    assert (validated.returncode, ran.returncode) == (1, 2), validated.stderr + ran.stderr
    assert ran.stdout == "" and ran.stderr == validated.stderr
    syntax = (
        "sql/broken.sql:3: template syntax error: Unexpected end of template. Jinja was looking for the following "
        "tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."
    )
    assert validated.stderr.splitlines()[1:] == [
        f"  {tmp_path}/flow.yaml:3: tasks.a.file: {syntax}",
        f"  {tmp_path}/tasks/broken.yaml:1: file: {syntax}",
        f"  {tmp_path}/flow.yaml:5: tasks.c.file: no SQL template: set 'file' (e.g. file: sql/staging/users.sql)",
        f"  {tmp_path}/tasks/typo.yaml:2: parms: unknown key 'parms' (did you mean 'params'?); valid keys: "
        "destination, dry_run, file, params, query_parameters, write_disposition",
    ], validated.stderr


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "config_file"])
def test_a_template_outside_the_project_is_refused(tmp_path: Path, how: str) -> None:
    project, outside = tmp_path / "proj", tmp_path / "elsewhere"
    write(outside / "evil.sql", "SELECT 1\n")
    config_file = ""
    raw = {"dotdot": "../elsewhere/evil.sql", "absolute": str(outside / "evil.sql"), "symlink": "link.sql"}.get(how, "")
    if how == "symlink":
        project.mkdir()
        (project / "link.sql").symlink_to(outside / "evil.sql")
    if how == "config_file":  # relative to the config file's folder, the last place looked in
        config_file = str(write(project / "tasks" / "t.yaml", "file: ../../elsewhere/evil.sql\n"))
        raw = "../../elsewhere/evil.sql"
    runner = BigQueryExecutor(BigQueryConfig(project=PROJECT, credentials="anonymous"))
    ctx = context({} if config_file else {"file": raw}, project)
    with pytest.raises(TaskError) as info:
        runner.prepare(config_file, ctx, {})
    field = f"{config_file}: file" if config_file else "tasks.load.file"
    assert str(info.value).startswith(f"{field}: {raw!r} resolves to {outside / 'evil.sql'}, outside the project folder")
    assert "allowed_path_roots" in str(info.value)
    allowed = dataclasses.replace(ctx, allowed_path_roots=(outside,))
    assert runner.prepare(config_file, allowed, {}).sql == "SELECT 1\n"


def test_offending_lines_without_a_position() -> None:
    from ork_executor_bigquery.sql import offending_lines

    sql = "SELECT u.id\nFROM source.users AS u\nJOIN source.orderz AS o ON o.user_id = u.id\n"
    shown = offending_lines(sql, "Not found: Table my-project:source.orderz was not found in location US")
    assert shown.splitlines() == [
        "    2 | FROM source.users AS u",
        "  > 3 | JOIN source.orderz AS o ON o.user_id = u.id",
    ]
    assert offending_lines("SELECT 1\n", "Internal error") == "    1 | SELECT 1"
    assert offending_lines("SELECT 1\n" * 40, "Internal error") == ""


def test_query_error_shows_bigquery_message_and_offending_sql(
    tmp_path: Path, emulator: Emulator, emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    emulator_client.query(f"CREATE TABLE `{emulator_dataset}.users` (id INT64, status STRING)").result()
    write(tmp_path / "q.sql", "-- active users\nSELECT id\nFROM `{{ table }}`\nWHERE statu = 'active'\n")

    result = run_task(
        "bigquery", config=emulator_config(emulator),
        task={"file": "q.sql", "params": {"table": f"{emulator_dataset}.users"}}, project_dir=tmp_path,
    )

    assert result.status == "failed", result.describe()
    error = result.error or ""
    assert 'Referenced column "statu" not found' in error  # BigQuery's (here: the emulator's) own words
    assert "in the SQL rendered from q.sql:" in error
    assert "> 4 | WHERE statu = 'active'" in error
    assert "3 | FROM" in error  # a line of context


def test_query_error_of_a_tracked_job_points_at_its_line_and_column(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "q.sql", "SELECT id,\n  name\nFROM ds.users\nWHERE statu = 1\n")

    def fail_when_submitted() -> None:
        wait_for(lambda: bool(fake_bq.job_ids()), "the job")
        fake_bq.finish(fake_bq.job_ids()[0], error="Unrecognized name: statu; Did you mean status? at [4:7]")

    finisher = threading.Thread(target=fail_when_submitted)
    finisher.start()
    try:
        result = run_task("bigquery", config=fake_config(fake_bq), task={"file": "q.sql"}, project_dir=tmp_path)
    finally:
        finisher.join()

    assert result.status == "failed", result.describe()
    error = result.error or ""
    assert "(invalidQuery): Unrecognized name: statu; Did you mean status? at [4:7]" in error
    assert "> 4 | WHERE statu = 1" in error
    assert "\n      |       ^" in error  # under column 7
    assert "console.cloud.google.com" in error
    assert result.deferred


def test_query_parameters_are_real_parameters(
    tmp_path: Path, emulator: Emulator, emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    table = f"{emulator_dataset}.people"
    emulator_client.query(f"CREATE TABLE `{table}` (id INT64, name STRING, joined DATE)").result()
    emulator_client.query(
        f"INSERT INTO `{table}` VALUES (1, \"o'brien\", DATE '2024-01-01'), (2, \"o'brien\", DATE '2024-03-01'), "
        "(3, 'x', DATE '2024-03-01'), (4, \"o'brien\", DATE '2024-03-05')"
    ).result()
    write(tmp_path / "q.sql", "SELECT id FROM `{{ table }}`\nWHERE name = @name AND joined >= @since AND id IN UNNEST(@ids)\n")

    result = run_task(
        "bigquery",
        config=emulator_config(emulator),
        task={
            "file": "q.sql",
            "params": {"table": table},
            "query_parameters": {"name": "o'brien", "since": {"type": "DATE", "value": "2024-02-01"}, "ids": [1, 2, 3]},
        },
        project_dir=tmp_path,
    )

    assert result.status == "success", result.describe()
    assert result.output["rows_affected"] == 1  # only id 2: a quote in a value is data, not SQL


def test_bad_query_parameter_names_the_field(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "q.sql", "SELECT @day\n")

    result = run_task(
        "bigquery", config=fake_config(fake_bq),
        task={"file": "q.sql", "query_parameters": {"day": {"kind": "DATE", "value": "2024-01-01"}}},
        project_dir=tmp_path,
    )

    assert result.status == "failed"
    assert "query_parameters.day: a mapping must be {type: BIGQUERY_TYPE, value: ...}" in (result.error or "")


def test_dry_run_runs_nothing(
    tmp_path: Path, emulator: Emulator, emulator_client: bigquery.Client, emulator_dataset: str
) -> None:
    write(tmp_path / "q.sql", "CREATE TABLE `{{ table }}` AS SELECT 1 AS one\n")

    result = run_task(
        "bigquery", config=emulator_config(emulator),
        task={"file": "q.sql", "params": {"table": f"{emulator_dataset}.made"}, "dry_run": True}, project_dir=tmp_path,
    )

    assert result.status == "success", result.describe()
    assert result.output["dry_run"] is True
    assert result.output["console_link"] == ""
    assert not result.deferred
    assert [t.table_id for t in emulator_client.list_tables(emulator_dataset)] == []


def test_dry_run_cost_uses_bigquerys_estimate(tmp_path: Path) -> None:
    write(tmp_path / "q.sql", "SELECT * FROM ds.big\n")
    with FakeBigQuery(project=PROJECT, dry_run_bytes=3 * TIB) as fake:
        result = run_task(
            "bigquery", config=fake_config(fake, cost_per_tb=6.25),
            task={"file": "q.sql", "dry_run": True}, project_dir=tmp_path,
        )
        assert fake.jobs_created == 0
        assert len(fake.dry_runs) == 1

    assert result.status == "success", result.describe()
    assert result.output["bytes_processed"] == 3 * TIB
    assert result.output["estimated_cost_usd"] == 18.75


def test_estimate_reports_cost_and_template_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ork_core.cli import main

    with FakeBigQuery(project=PROJECT, dry_run_bytes=2 * TIB) as fake:
        write(tmp_path / "ork.yaml", yaml.safe_dump({"executors": {"bq": {"type": "bigquery", "config": fake_config(fake)}}}))
        write(tmp_path / "a.sql", "SELECT * FROM ds.a\n")
        write(tmp_path / "b.sql", "SELECT {{ a.bytes_processed }} AS upstream_bytes, {{ nope }}\n")
        write(tmp_path / "wf.yaml", yaml.safe_dump({
            "name": "wf",
            "tasks": {
                "a": {"executor": "bq", "file": "a.sql"},
                "b": {"executor": "bq", "file": "b.sql", "depends_on": ["a"]},
            },
        }))
        monkeypatch.chdir(tmp_path)
        for name in ENV_DROPPED:
            monkeypatch.delenv(name, raising=False)

        shown = CliRunner().invoke(main, ["bigquery", "estimate", str(tmp_path / "wf.yaml")])

        assert fake.jobs_created == 0

    assert shown.exit_code == 1, shown.output
    lines = shown.stdout.splitlines()
    assert lines[1].split() == ["a", "2,199,023,255,552", "(2.0", "TiB)", "$10.0000"]
    assert lines[2].split() == ["b", "error"]
    assert "b.sql:1: 'nope' is undefined" in shown.stdout


# --------------------------------------------------------------------------- what only the fake can show


def test_job_running_across_kill_9_and_resume_is_submitted_once(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "ork.yaml", yaml.safe_dump({
        "executors": {"bigquery": {"type": "bigquery", "config": fake_config(fake_bq, poll_interval=0.1)}},
    }))
    write(tmp_path / "sql" / "load.sql", "INSERT INTO ds.t SELECT * FROM ds.src\n")
    write(tmp_path / "sql" / "report.sql", "SELECT {{ load.rows_affected }} AS loaded\n")
    write(tmp_path / "wf.yaml", yaml.safe_dump({
        "name": "wf",
        "tasks": {
            "load": {"executor": "bigquery", "file": "sql/load.sql"},
            "report": {"executor": "bigquery", "file": "sql/report.sql", "depends_on": ["load"]},
        },
    }))
    first = subprocess.Popen(
        [sys.executable, "-m", "ork_core", "run", "wf.yaml"], cwd=tmp_path, env=child_env(),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    try:
        # The tracker polls only once the Deferred handle is committed.
        wait_for(lambda: fake_bq.get_calls >= 2, "ork run to track the job")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        out, _ = first.communicate(timeout=30)
    run_id = run_id_of(out)
    (load_job,) = fake_bq.job_ids()
    assert fake_bq.job(load_job).state == "RUNNING"
    polls_before = fake_bq.get_calls

    resumed = subprocess.Popen(
        [sys.executable, "-m", "ork_core", "resume", run_id], cwd=tmp_path, env=child_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        wait_for(lambda: fake_bq.get_calls > polls_before, "ork resume to poll the job again")
        fake_bq.finish(load_job, rows=5, bytes=2048)
        wait_for(lambda: len(fake_bq.job_ids()) == 2, "the downstream task's job")
        report_job = fake_bq.job_ids()[1]
        fake_bq.finish(report_job, rows=1)
        out, err = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            os.killpg(resumed.pid, signal.SIGKILL)
            resumed.communicate()

    assert resumed.returncode == 0, out + err
    assert fake_bq.insert_calls == 2 and fake_bq.jobs_created == 2  # one insert per task, none repeated
    assert fake_bq.job(report_job).sql == "SELECT 5 AS loaded\n"
    tasks = tasks_of(run_json(run_id, tmp_path))
    assert tasks["load"]["status"] == "success"
    assert tasks["load"]["attempts"] == 1
    assert tasks["load"]["output"]["rows_affected"] == 5
    assert tasks["load"]["output"]["job_id"] == load_job
    assert tasks["load"]["external_id"] == load_job
    metrics = json.loads(ork("metrics", run_id, "--json", cwd=tmp_path).stdout)
    assert {"task": "load", "name": "bytes_processed", "value": 2048.0} in [
        {k: m[k] for k in ("task", "name", "value")} for m in metrics
    ]


def test_resubmitting_an_attempt_adopts_the_existing_job(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "q.sql", "DELETE FROM ds.t WHERE TRUE\n")
    bq_executor = BigQueryExecutor(BigQueryConfig.model_validate(fake_config(fake_bq)))
    try:
        first = bq_executor.run("", context({"file": "q.sql"}, tmp_path))
        # The same attempt again, as after a crash: BigQuery answers 409 for the job id.
        sink = MemorySink()
        again = bq_executor.run("", context({"file": "q.sql"}, tmp_path, sink))
        assert isinstance(first, Deferred) and isinstance(again, Deferred)
        assert again.handle["job_id"] == first.handle["job_id"] == "ork-20240101-000000-abcdef-load-t1"
        assert fake_bq.insert_calls == 2 and fake_bq.jobs_created == 1
        assert any("adopted, not submitted again" in line[-1] for line in sink.lines)

        write(tmp_path / "q.sql", "DELETE FROM ds.other WHERE TRUE\n")
        with pytest.raises(TaskError, match="already exists for a different query; refusing to adopt it"):
            bq_executor.run("", context({"file": "q.sql"}, tmp_path))
        assert fake_bq.jobs_created == 1
    finally:
        bq_executor.close()


def test_cancel_while_submitting(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "q.sql", "SELECT COUNT(*) FROM ds.huge\n")
    bq_executor = BigQueryExecutor(BigQueryConfig.model_validate(fake_config(fake_bq)))
    try:
        bq_executor.cancel(context({"file": "q.sql"}, tmp_path))  # nothing submitted yet: nothing to do
        submitted = bq_executor.run("", context({"file": "q.sql"}, tmp_path))
        assert isinstance(submitted, Deferred)
        bq_executor.cancel(context({"file": "q.sql"}, tmp_path))  # ork's cancel(ctx) reaches the job by its id
        job = fake_bq.job(submitted.handle["job_id"])
        assert job.state == "DONE" and (job.error or {}).get("reason") == "stopped"

        late = context({"file": "q.sql"}, tmp_path)
        late.cancel_event.set()
        with pytest.raises(TaskError, match="cancelled before the query was submitted"):
            bq_executor.run("", late)
        assert fake_bq.insert_calls == 1
    finally:
        bq_executor.close()


def test_lost_insert_answer_is_adopted_not_resubmitted(tmp_path: Path) -> None:
    write(tmp_path / "q.sql", "UPDATE ds.t SET x = 1 WHERE TRUE\n")
    with FakeBigQuery(project=PROJECT, auto_finish_after=0.2) as fake:
        fake.fail_next_inserts(1, status=503, after_create=True)

        result = run_task("bigquery", config=fake_config(fake), task={"file": "q.sql"}, project_dir=tmp_path)

        assert result.status == "success", result.describe()
        assert fake.insert_calls == 2 and fake.jobs_created == 1
        assert "adopted, not submitted again" in result.log_text


def test_timeout_cancels_the_job(tmp_path: Path, fake_bq: FakeBigQuery) -> None:
    write(tmp_path / "q.sql", "SELECT COUNT(*) FROM ds.huge\n")

    result = run_task(
        "bigquery", config=fake_config(fake_bq), task={"file": "q.sql"}, timeout=0.5, project_dir=tmp_path
    )

    assert result.status == "failed", result.describe()
    assert "timed out" in (result.error or "")
    (job_id,) = fake_bq.job_ids()
    job = fake_bq.job(job_id)
    assert job.state == "DONE" and job.error is not None and job.error["reason"] == "stopped"
    assert fake_bq.cancel_calls >= 1


def test_503_while_polling_is_retried(tmp_path: Path) -> None:
    write(tmp_path / "q.sql", "SELECT 1\n")
    with FakeBigQuery(project=PROJECT, auto_finish_after=0.3) as fake:
        fake.fail_next_gets(3, status=503)

        result = run_task("bigquery", config=fake_config(fake), task={"file": "q.sql"}, project_dir=tmp_path)

        assert result.status == "success", result.describe()
        assert result.deferred
        assert fake.get_calls >= 4
        assert fake.jobs_created == 1


def test_job_carries_the_configured_settings(tmp_path: Path) -> None:
    write(tmp_path / "q.sql", "SELECT * FROM events WHERE day = @day\n")
    with FakeBigQuery(project=PROJECT, auto_finish_after=0.1) as fake:
        result = run_task(
            "bigquery",
            config=fake_config(
                fake, labels={"team": "data"}, maximum_bytes_billed=10**9, default_dataset="analytics", location="EU"
            ),
            task={
                "file": "q.sql",
                "query_parameters": {"day": {"type": "DATE", "value": "2024-05-01"}},
                "destination": "analytics.daily",
                "write_disposition": "WRITE_TRUNCATE",
            },
            project_dir=tmp_path,
        )
        assert result.status == "success", result.describe()
        job = fake.job(result.output["job_id"])

    assert job.location == "EU"
    assert job.labels == {"team": "data", "ork-workflow": "ork-testing", "ork-task": "task", "ork-run": result.run_id}
    query = job.query_config
    assert query["maximumBytesBilled"] == str(10**9)
    assert query["defaultDataset"] == {"projectId": PROJECT, "datasetId": "analytics"}
    assert query["destinationTable"] == {"projectId": PROJECT, "datasetId": "analytics", "tableId": "daily"}
    assert query["writeDisposition"] == "WRITE_TRUNCATE"
    assert query["useLegacySql"] is False
    assert query["queryParameters"] == [
        {"name": "day", "parameterType": {"type": "DATE"}, "parameterValue": {"value": "2024-05-01"}}
    ]
    assert result.external_id == result.output["job_id"]
    assert result.link == result.output["console_link"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"project": "p", "labls": {}}, "executors.bq.config.labls: unknown key 'labls' (did you mean 'labels'?)"),
        (
            {"project": "p", "credentials": "nope.json"},
            "executors.bq.config.credentials: must be 'default', 'anonymous' or the path of a "
            "service-account JSON key file",
        ),
        ({"project": "p", "labels": {"Team": "x"}}, "label key 'Team' must start with a lowercase letter"),
        ({"location": "EU"}, "executors.bq.config.project: required field is missing"),
    ],
)
def test_bad_config_is_one_clear_message(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    write(tmp_path / "ork.yaml", yaml.safe_dump({"executors": {"bq": {"type": "bigquery", "config": config}}}))
    write(tmp_path / "wf.yaml", yaml.safe_dump({"name": "wf", "tasks": {"a": {"executor": "bq"}}}))

    checked = ork("validate", "wf.yaml", cwd=tmp_path)

    assert checked.returncode != 0
    assert message in checked.stderr, checked.stderr


def test_bad_task_key_is_reported_by_validate(tmp_path: Path) -> None:
    write(tmp_path / "ork.yaml", yaml.safe_dump({"executors": {"bq": {"type": "bigquery", "config": {"project": "p"}}}}))
    write(tmp_path / "wf.yaml", yaml.safe_dump({
        "name": "wf",
        "tasks": {"a": {"executor": "bq", "fil": "a.sql"}, "b": {"executor": "bq", "write_disposition": "WRITE_TRUNCATE"}},
    }))

    checked = ork("validate", "wf.yaml", cwd=tmp_path)

    assert checked.returncode != 0
    assert "tasks.a.fil: unknown key 'fil' (did you mean 'file'?)" in checked.stderr, checked.stderr
    assert "write_disposition needs a destination table" in checked.stderr, checked.stderr


# --------------------------------------------------------------------------- ork's conformance kit


HOLD = "-- hold"
"""SQL containing this stays RUNNING in the fake until cancelled (the slow task)."""


class TestBigQueryConformance(ExecutorConformance):
    executor = "bigquery"
    distribution = "ork-executor-bigquery"
    timeout_seconds = 0.5
    cancel_after = 0.3

    @pytest.fixture(autouse=True)
    def _fake(self) -> Iterator[None]:
        with FakeBigQuery(project=PROJECT, auto_finish_after=0.1, hold_marker=HOLD) as fake:
            self.fake = fake
            yield

    def config(self) -> Mapping[str, Any]:
        return fake_config(self.fake)

    # The templates go in the check's project: a workflow's paths must stay inside its project.
    def task(self) -> Mapping[str, Any]:
        write(self.project_dir / "quick.sql", "SELECT 1 AS one\n")
        return {"file": "quick.sql"}

    def slow_task(self) -> Mapping[str, Any]:
        write(self.project_dir / "slow.sql", f"{HOLD}\nSELECT COUNT(*) FROM ds.huge\n")
        return {"file": "slow.sql"}

    def submissions(self) -> int:
        return self.fake.jobs_created

    def check_output(self, output: Any) -> None:
        assert output["rows_affected"] == 0
        assert output["job_id"].startswith("ork-")

    def check_stopped(self, result: Any) -> None:
        held = [self.fake.job(j) for j in self.fake.job_ids() if HOLD in self.fake.job(j).sql]
        assert held and all(j.state == "DONE" and (j.error or {}).get("reason") == "stopped" for j in held)
