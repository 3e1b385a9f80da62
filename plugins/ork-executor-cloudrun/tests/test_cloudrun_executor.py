"""The ``cloudrun`` executor and tracker through ork's real scheduler, against FakeCloudRun.

Runs are in-process (``ork_core.scheduler``) where that is enough, and real ``ork run`` /
``ork resume`` child processes where a crash has to be real (``kill -9``). The fake always
lives in the test process; children reach it through the endpoint written into ork.yaml.
Nothing is mocked: the plugin is discovered through its entry point and talks to the fake
with the genuine google-cloud-run REST client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_cloudrun import FakeCloudRun

from ork import Context, Deferred, JobState, TaskError
from ork_core.context import MemorySink, Metrics, TaskLogger
from ork_core.errors import ProjectError, WorkflowError
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import RunResult, Scheduler, coerce_params, create_run, execute
from ork_core.storage import open_storage, storage_url
from ork_core.storage.base import RunRecord
from ork_core.workflow import load_workflow
from ork_executor_cloudrun import api
from ork_executor_cloudrun.executor import CloudRunConfig, CloudRunExecutor
from ork_executor_cloudrun.tracker import CloudRunJobTracker

PROJECT = "ork-test"  # same as the conftest fixtures
REGION = "europe-west1"
JOBS = f"projects/{PROJECT}/locations/{REGION}/jobs"
KEY = "ORK_IDEMPOTENCY_KEY"
POLL = 0.05


# ------------------------------------------------------------------ helpers


def write_project(
    folder: Path,
    fake: FakeCloudRun,
    tasks: dict[str, dict[str, Any]],
    *,
    params: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """ork.yaml pointing a ``cloudrun`` executor at the fake, and a workflow; returns the workflow path."""
    executor_config = {
        "project": PROJECT,
        "region": REGION,
        "api_endpoint": fake.endpoint,
        "credentials": "anonymous",
        "poll_interval": POLL,
        "request_timeout": 5,
        **(config or {}),
    }
    (folder / "ork.yaml").write_text(
        yaml.safe_dump({"executors": {"cloudrun": {"type": "cloudrun", "config": executor_config}}})
    )
    workflow = {"name": "cr", "params": params or {}, "tasks": tasks}
    path = folder / "wf.yaml"
    path.write_text(yaml.safe_dump(workflow, sort_keys=False))
    return path


class InProcessRun:
    """One ``ork run`` inside the test process, optionally on a thread so the test can act mid-run."""

    def __init__(self, workflow: Path, params: dict[str, str] | None = None) -> None:
        self.plugins = build_plugin_manager(env={})
        project = Project.load(workflow.parent, self.plugins, env={})
        compiled = load_workflow(workflow, project)
        run_params = coerce_params(compiled, params or {})
        self.storage = open_storage(storage_url(None, project.dir, None, env={}), self.plugins.registry)
        self.run_id = create_run(self.storage, compiled, run_params)
        self.scheduler = Scheduler(
            project=project,
            plugins=self.plugins,
            storage=self.storage,
            workflow=compiled,
            run_id=self.run_id,
            params=run_params,
        )
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _main(self) -> None:
        try:
            self.result = execute(self.scheduler, handle_signals=False)
        except BaseException as exc:  # surfaced by wait()
            self.error = exc

    def start(self) -> InProcessRun:
        self._thread = threading.Thread(target=self._main, name="ork-run")
        self._thread.start()
        return self

    def wait(self, timeout: float = 30) -> RunRecord:
        if self._thread is None:
            self._main()
        else:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        try:
            return self.storage.get_run(self.run_id)
        finally:
            self.storage.close()


def wait_for(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_request_bodies(fake: FakeCloudRun) -> list[dict[str, Any]]:
    return [r.body or {} for r in fake.requests if r.method == "POST" and r.path.endswith(":run")]


def env_of(body: dict[str, Any]) -> dict[str, str]:
    (container,) = body["overrides"]["containerOverrides"]
    return {item["name"]: item["value"] for item in container["env"]}


def _direct_context(tmp_path: Path, key: str, **fields: Any) -> Context:
    """A Context as the scheduler builds it, for calling the executor's methods directly."""
    sink = MemorySink()
    return Context(
        task_name="t",
        workflow_name="w",
        run_id="r",
        attempt=1,
        log=TaskLogger(sink, "r", "t", 1),
        metrics=Metrics(sink, "r", "t", 1),
        idempotency_key=key,
        workflow_dir=tmp_path,
        project_dir=tmp_path,
        **fields,
    )


@pytest.fixture
def direct_executor(fake_cloudrun: FakeCloudRun) -> Iterator[CloudRunExecutor]:
    executor = CloudRunExecutor(
        CloudRunConfig(project=PROJECT, region=REGION, api_endpoint=fake_cloudrun.endpoint, credentials="anonymous")
    )
    try:
        yield executor
    finally:
        executor.close()


# --------------------------------------------------------------- happy path


def test_success_renders_overrides_passes_identity_and_outputs_the_execution(
    tmp_path: Path, fake_cloudrun: FakeCloudRun
) -> None:
    fake_cloudrun.add_job("hello", duration_s=0.3)
    fake_cloudrun.add_job("report", duration_s=0.1, parallelism=2)
    workflow = write_project(
        tmp_path,
        fake_cloudrun,
        {
            "extract": {
                "executor": "cloudrun",
                "job": "hello",
                "args": ["--day", "{{ params.day }}"],
                "env": {"GREETING": "hello {{ params.day }}"},
                "task_count": 2,
                "task_timeout": 120,
            },
            "report": {
                "executor": "cloudrun",
                "depends_on": ["extract"],
                "job": "report",
                "parallelism": 2,
                "env": {"SOURCE": "{{ tasks.extract.output.execution_id }}:{{ upstream.extract.succeeded_count }}"},
            },
        },
        params={"day": "2024-01-01"},
    )
    run = InProcessRun(workflow, {"day": "2024-05-06"})
    record = run.wait()

    assert record.status == "success", {t.name: t.error for t in record.tasks.values()}
    extract = record.tasks["extract"]
    (first_execution,) = fake_cloudrun.execution_names("hello")
    assert extract.output == {
        "execution": first_execution,
        "execution_id": first_execution.rsplit("/", 1)[-1],
        "job": "hello",
        "task_count": 2,
        "succeeded_count": 2,
        "failed_count": 0,
        "cancelled_count": 0,
        "start_time": extract.output["start_time"],
        "completion_time": extract.output["completion_time"],
        "log_uri": fake_cloudrun.execution_json(first_execution)["logUri"],
        "console_link": api.execution_console_link(first_execution),
    }
    assert extract.output["start_time"] < extract.output["completion_time"]
    assert extract.external_id == first_execution
    assert extract.link == api.execution_console_link(first_execution)
    assert extract.attempt == 1

    first, second = run_request_bodies(fake_cloudrun)
    assert first["overrides"]["containerOverrides"][0]["args"] == ["--day", "2024-05-06"]
    assert first["overrides"]["taskCount"] == 2
    assert first["overrides"]["timeout"] == "120s"
    assert env_of(first) == {
        "GREETING": "hello 2024-05-06",
        "ORK_RUN_ID": run.run_id,
        "ORK_TASK": "extract",
        KEY: extract.idempotency_key,
    }
    assert env_of(second)["SOURCE"] == f"{first_execution.rsplit('/', 1)[-1]}:2"
    assert "args" not in second["overrides"]["containerOverrides"][0]  # the job's own args apply
    assert fake_cloudrun.run_calls == 2


def test_job_and_settings_from_config_file_and_executor_default(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("default-job", duration_s=0.1)
    fake_cloudrun.add_job("from-file", duration_s=0.1)
    workflow = write_project(
        tmp_path,
        fake_cloudrun,
        {
            "plain": {"executor": "cloudrun"},
            "filed": {"executor": "cloudrun", "config_file": "filed.yaml", "env": {"B": "inline"}},
        },
        config={"job": "default-job"},
    )
    (tmp_path / "filed.yaml").write_text(
        yaml.safe_dump({"job": "from-file", "args": ["x"], "env": {"A": "file", "B": "file"}})
    )
    record = InProcessRun(workflow).wait()
    assert record.status == "success"
    assert record.tasks["plain"].output["job"] == "default-job"
    assert record.tasks["filed"].output["job"] == "from-file"
    (body,) = [b for b in run_request_bodies(fake_cloudrun) if b["overrides"]["containerOverrides"][0].get("args")]
    assert {k: v for k, v in env_of(body).items() if not k.startswith("ORK_")} == {"A": "file", "B": "inline"}


# ----------------------------------------------------------------- failures


def test_failed_execution_fails_the_task_with_its_condition_message(
    tmp_path: Path, fake_cloudrun: FakeCloudRun
) -> None:
    fake_cloudrun.add_job("boom", duration_s=0.2, fail=True, fail_message="exit code 3: no input for 2024-05-06")
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "boom"}})
    record = InProcessRun(workflow).wait()
    task = record.tasks["t"]
    assert record.status == "failed" and task.status == "failed"
    (execution,) = fake_cloudrun.execution_names("boom")
    assert task.error is not None
    assert f"Cloud Run execution {execution} failed" in task.error
    assert "0 succeeded, 1 failed, 0 cancelled of 1" in task.error
    assert "exit code 3: no input for 2024-05-06" in task.error
    assert fake_cloudrun.run_calls == 1


def test_job_not_found_names_job_project_and_region(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "no-such-job"}})
    record = InProcessRun(workflow).wait()
    task = record.tasks["t"]
    assert task.status == "failed"
    assert task.error == (
        f"Cloud Run job 'no-such-job' does not exist in project {PROJECT!r}, region {REGION!r}: check the task's "
        "'job' and the executor's 'project' and 'region' in ork.yaml"
    )
    assert fake_cloudrun.run_calls == 0  # found out before submitting anything


def test_permission_denied_is_a_clear_task_error(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("secret", forbidden=True)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "secret"}})
    record = InProcessRun(workflow).wait()
    error = record.tasks["t"].error or ""
    assert record.tasks["t"].status == "failed"
    assert error.startswith(f"permission denied on Cloud Run job '{JOBS}/secret' in project {PROJECT!r}")
    assert "roles/run.developer" in error
    assert fake_cloudrun.execution_names("secret") == []


def test_parallelism_that_the_job_does_not_have_fails_before_running(
    tmp_path: Path, fake_cloudrun: FakeCloudRun
) -> None:
    fake_cloudrun.add_job("fanout", parallelism=2, task_count=4)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "fanout", "parallelism": 4}})
    record = InProcessRun(workflow).wait()
    assert "configured with parallelism 2 but 4 was requested" in (record.tasks["t"].error or "")
    assert fake_cloudrun.run_calls == 0


def test_bad_template_and_reserved_env_fail_clearly(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("hello")
    workflow = write_project(
        tmp_path,
        fake_cloudrun,
        {
            "typo": {"executor": "cloudrun", "job": "hello", "env": {"DAY": "{{ params.dya }}"}},
            "reserved": {"executor": "cloudrun", "job": "hello", "env": {"ORK_TASK": "mine"}},
            "nojob": {"executor": "cloudrun"},
        },
        params={"day": "x"},
    )
    record = InProcessRun(workflow).wait()
    assert "task 'typo' env.DAY" in (record.tasks["typo"].error or "")
    assert "dya" in (record.tasks["typo"].error or "")
    assert record.tasks["reserved"].error == "task 'reserved': env: ORK_TASK is set by ork and cannot be overridden"
    assert "task 'nojob' names no Cloud Run job" in (record.tasks["nojob"].error or "")
    assert "executors.cloudrun.config" in (record.tasks["nojob"].error or "")
    assert fake_cloudrun.run_calls == 0


# ------------------------------------------------------------- cancellation


def test_task_timeout_cancels_the_execution(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("forever", duration_s=None, cancel_delay_s=0.2)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "forever", "timeout": 1}})
    started = time.monotonic()
    record = InProcessRun(workflow).wait()
    assert time.monotonic() - started < 10
    task = record.tasks["t"]
    assert task.status == "failed"
    assert "timed out after 1s" in (task.error or ""), task.error
    (execution,) = fake_cloudrun.execution_names("forever")
    assert fake_cloudrun.cancel_calls == 1
    assert fake_cloudrun.execution(execution).cancel_requested_at is not None
    wait_for(lambda: "completionTime" in fake_cloudrun.execution_json(execution), 5, "the cancel to take effect")
    assert fake_cloudrun.execution_json(execution)["cancelledCount"] == 1


def test_cancelling_the_run_cancels_the_execution(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("forever", duration_s=None)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "forever"}})
    run = InProcessRun(workflow).start()
    wait_for(lambda: fake_cloudrun.get_calls >= 1, what="the tracker to poll")
    run.scheduler.request_cancel()
    record = run.wait()
    assert record.status == "cancelled"
    assert record.tasks["t"].status == "cancelled"
    assert fake_cloudrun.cancel_calls == 1


def test_an_execution_cancelled_outside_ork_fails_the_task_as_cancelled(
    fake_cloudrun: FakeCloudRun, clients: api.CloudRunClients, direct_executor: CloudRunExecutor
) -> None:
    fake_cloudrun.add_job("forever", duration_s=None)
    name = api.run_job(clients, "forever")
    api.cancel_execution(clients, name)  # someone pressed "cancel" in the console
    tracker = CloudRunJobTracker(direct_executor)
    (status,) = asyncio.run(tracker.poll([{"execution": name}]))
    assert not isinstance(status, BaseException)
    assert status.state is JobState.FAILED
    assert status.error is not None
    assert status.error.startswith(f"Cloud Run execution {name} was cancelled (0 succeeded, 0 failed, 1 cancelled of 1)")
    assert "The execution was cancelled." in status.error
    tracker.cancel({"execution": name})  # idempotent: cancelling again is fine
    assert fake_cloudrun.cancel_calls == 2


# ----------------------------------------------------------- transient errors


def test_503_while_polling_backs_off_then_recovers(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("flaky", duration_s=1.0)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "flaky"}})
    run = InProcessRun(workflow).start()
    wait_for(lambda: fake_cloudrun.get_calls >= 1, what="the tracker to poll")
    fake_cloudrun.fail_next_gets(3, code=503)
    record = run.wait()
    assert record.status == "success"
    assert record.tasks["t"].attempt == 1
    polls = [r.status for r in fake_cloudrun.requests if r.method == "GET" and "/executions/" in r.path]
    assert polls.count(503) == 3
    assert polls[-1] == 200
    assert fake_cloudrun.run_calls == 1


def test_lost_run_answer_is_adopted_not_rerun(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("adopt", duration_s=0.2)
    fake_cloudrun.fail_next_runs(1, code=503, after_create=True)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "adopt"}})
    run = InProcessRun(workflow)
    record = run.wait()
    assert record.status == "success"
    assert fake_cloudrun.run_calls == 1
    (execution,) = fake_cloudrun.execution_names("adopt")
    assert record.tasks["t"].external_id == execution
    assert fake_cloudrun.find_executions_by_env(KEY, record.tasks["t"].idempotency_key or "") == [execution]


def test_run_refused_before_creating_anything_is_retried(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    fake_cloudrun.add_job("retry", duration_s=0.1)
    fake_cloudrun.fail_next_runs(1, code=503, after_create=False)
    workflow = write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "retry"}})
    record = InProcessRun(workflow).wait()
    assert record.status == "success"
    assert fake_cloudrun.run_calls == 2
    assert len(fake_cloudrun.execution_names("retry")) == 1


# ------------------------------------------------------ crash and ork resume


def _ork_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ork(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ork")), *args]


@pytest.fixture
def ork_child() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``ork`` child processes; any still alive at the end are killed and reaped."""
    children: list[subprocess.Popen[str]] = []

    def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            _ork(*args), cwd=cwd, env=_ork_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=10)


def _resume(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _ork("resume"), cwd=cwd, env=_ork_env(), text=True, capture_output=True, timeout=60, check=False
    )


def _stored_run(folder: Path) -> RunRecord:
    plugins = build_plugin_manager(env={})
    storage = open_storage(storage_url(None, folder, None, env={}), plugins.registry)
    try:
        (latest,) = storage.list_runs(1)
        return storage.get_run(latest.id)
    finally:
        storage.close()


def test_kill_9_while_deferred_then_resume_polls_the_same_execution(
    tmp_path: Path, fake_cloudrun: FakeCloudRun, ork_child: Callable[..., subprocess.Popen[str]]
) -> None:
    fake_cloudrun.add_job("long", duration_s=2.0)
    write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "long"}})
    child = ork_child("run", "wf.yaml", cwd=tmp_path)
    wait_for(lambda: fake_cloudrun.get_calls >= 1 or child.poll() is not None, what="ork to defer the task")
    assert child.poll() is None, child.communicate()[0]
    (execution,) = fake_cloudrun.execution_names("long")
    assert "completionTime" not in fake_cloudrun.execution_json(execution)  # killed mid-execution
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert _stored_run(tmp_path).tasks["t"].status == "deferred"

    resumed = _resume(tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    task = _stored_run(tmp_path).tasks["t"]
    assert task.status == "success"
    assert task.output["execution"] == execution
    assert fake_cloudrun.run_calls == 1


def test_kill_9_before_the_execution_was_recorded_then_resume_adopts_it(
    tmp_path: Path, fake_cloudrun: FakeCloudRun, ork_child: Callable[..., subprocess.Popen[str]]
) -> None:
    """The worst moment: Cloud Run created the execution, ork died before hearing of it."""
    fake_cloudrun.add_job("long", duration_s=1.0)
    fake_cloudrun.hold_next_run_answers(1, hold_s=60)
    write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "long"}})
    child = ork_child("run", "wf.yaml", cwd=tmp_path)
    wait_for(lambda: bool(fake_cloudrun.execution_names("long")) or child.poll() is not None, what="the :run call")
    assert child.poll() is None, child.communicate()[0]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    before = _stored_run(tmp_path).tasks["t"]
    assert before.status == "running" and before.external_id is None

    resumed = _resume(tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    task = _stored_run(tmp_path).tasks["t"]
    (execution,) = fake_cloudrun.execution_names("long")
    assert task.status == "success"
    assert task.output["execution"] == execution
    assert task.idempotency_key == before.idempotency_key
    assert fake_cloudrun.run_calls == 1


# ---------------------------------------------------- registration, config, direct calls


def test_discovery_and_validation_do_not_import_the_google_client(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    write_project(tmp_path, fake_cloudrun, {"t": {"executor": "cloudrun", "job": "hello", "task_count": 3}})
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ork_core.plugins import build_plugin_manager\n"
        "from ork_core.project import Project\n"
        "from ork_core.workflow import load_workflow\n"
        "plugins = build_plugin_manager(env={})\n"
        "assert plugins.registry.get('executor', 'cloudrun').target_path == "
        "'ork_executor_cloudrun.executor:CloudRunExecutor'\n"
        "assert plugins.registry.get('tracker', 'cloudrun').target_path == "
        "'ork_executor_cloudrun.tracker:CloudRunJobTracker'\n"
        "load_workflow(Path('wf.yaml').resolve(), Project.load(Path.cwd(), plugins, env={}))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('google.cloud'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_ork_env(), check=True, timeout=60)


def test_config_errors_name_the_file_and_field(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    write_project(
        tmp_path,
        fake_cloudrun,
        {"t": {"executor": "cloudrun", "job": "Bad_Job", "task_count": 0, "timeuot": 3}},
        config={"credentials": str(tmp_path / "missing.json"), "region": None},
    )
    project = Project.load(tmp_path, build_plugin_manager(env={}), env={})
    with pytest.raises(ProjectError) as info:
        project.resolve("cloudrun")
    text = str(info.value)
    assert "executors.cloudrun.config.region" in text
    assert "executors.cloudrun.config.credentials" in text and "missing.json" in text

    (tmp_path / "ork.yaml").write_text(
        yaml.safe_dump({"executors": {"cloudrun": {"type": "cloudrun", "config": {"project": "p", "region": "r"}}}})
    )
    project = Project.load(tmp_path, build_plugin_manager(env={}), env={})
    with pytest.raises(WorkflowError) as winfo:
        load_workflow(tmp_path / "wf.yaml", project)
    problems = {p.path: p.message for p in winfo.value.problems}
    assert "is not a Cloud Run job name" in problems["tasks.t.job"]
    assert "greater than 0" in problems["tasks.t.task_count"]
    assert "unknown key 'timeuot'" in problems["tasks.t.timeuot"]
    assert "did you mean 'timeout'" in problems["tasks.t.timeuot"]


def test_template_syntax_and_config_file_keys_are_validated(tmp_path: Path, fake_cloudrun: FakeCloudRun) -> None:
    (tmp_path / "task.yaml").write_text("job: hello\nenv: {A: '{{ params.a '}\ntask_cuont: 2\n")
    write_project(
        tmp_path,
        fake_cloudrun,
        {
            "t": {"executor": "cloudrun", "job": "hello", "args": ["--day", "{% if %}"], "env": {"B": "{{ }}"}},
            "u": {"executor": "cloudrun", "config_file": "task.yaml"},
        },
    )
    project = Project.load(tmp_path, build_plugin_manager(env={}), env={})
    with pytest.raises(WorkflowError) as winfo:
        load_workflow(tmp_path / "wf.yaml", project)
    problems = {(Path(p.file).name, p.path): p.message for p in winfo.value.problems}
    assert problems[("wf.yaml", "tasks.t.args[1]")].startswith("template syntax error on line 1:")
    assert problems[("wf.yaml", "tasks.t.env.B")].startswith("template syntax error on line 1:")
    assert "unknown key 'task_cuont'" in problems[("task.yaml", "task_cuont")]


def test_adopt_finds_the_execution_by_key_also_with_a_config_file(
    tmp_path: Path, fake_cloudrun: FakeCloudRun, direct_executor: CloudRunExecutor
) -> None:
    fake_cloudrun.add_job("hello")
    (tmp_path / "task.yaml").write_text("job: hello\n")
    key = "ork-r-t-t1"
    ctx = _direct_context(tmp_path, key, config_file=str(tmp_path / "task.yaml"))
    assert direct_executor.adopt(key, ctx) is None  # nothing carries the key: ork runs the task
    api.run_job(direct_executor.clients(), "hello", env={KEY: "ork-r-t-t0"})
    started = api.run_job(direct_executor.clients(), "hello", env={KEY: key})
    adopted = direct_executor.adopt(key, ctx)
    assert adopted is not None
    assert (adopted.tracker, adopted.external_id, adopted.handle["execution"]) == ("cloudrun", started, started)
    assert fake_cloudrun.run_calls == 2

    fake_cloudrun.set_forbidden("hello")
    with pytest.raises(TaskError, match="could not check for an execution to adopt: permission denied"):
        direct_executor.adopt(key, ctx)  # not knowing must not read as "nothing to adopt"


def test_cancel_reaches_an_execution_whose_deferred_ork_never_saw(
    tmp_path: Path, fake_cloudrun: FakeCloudRun, direct_executor: CloudRunExecutor
) -> None:
    """The timeout fired just as run() returned: cancel(ctx) finds the execution by its key."""
    fake_cloudrun.add_job("forever", duration_s=None)
    ctx = _direct_context(tmp_path, "ork-r-t-t1", task_config={"job": "forever"})
    deferred = direct_executor.run("", ctx, {})
    assert isinstance(deferred, Deferred)
    ctx.cancel_event.set()
    direct_executor.cancel(ctx)
    assert fake_cloudrun.cancel_calls == 1
    assert fake_cloudrun.execution(deferred.handle["execution"]).cancel_requested_at is not None

    fresh = _direct_context(tmp_path, "ork-r-t-t2", task_config={"job": "forever"})
    fresh.cancel_event.set()
    with pytest.raises(TaskError, match="cancelled before Cloud Run started an execution"):
        direct_executor.run("", fresh, {})
    direct_executor.cancel(fresh)  # nothing was started: nothing to cancel
    assert fake_cloudrun.run_calls == 1 and fake_cloudrun.cancel_calls == 1
