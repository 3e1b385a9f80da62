"""Deferred jobs end to end: the scheduler, the triggerer, storage and `ork jobs`.

The external system is a fake job service kept in files (one JSON file per job and an
append-only event log), so it outlives an `ork run` that is killed with SIGKILL. Its
executor and tracker are a small plugin written into a fake installed distribution, so
both in-process runs and real `ork` processes discover it the way they discover any plugin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import RunResult, Scheduler, create_run, execute
from ork_core.storage import open_storage, storage_url
from ork_core.storage.base import RunRecord
from ork_core.workflow import load_workflow

FAKE_PLUGIN = '''
"""A fake external job service kept in files, so it outlives a killed ork."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ork import Context, Deferred, JobStatus, KickoffUncertain, executor, hookimpl

ORK_PLUGIN_API = ">=1,<2"


class FakeConfig(BaseModel):
    root: str
    poll_interval: float = 0.05
    max_poll_failures: int = 10
    max_backoff: float = 60.0
    adopt: bool = True


class FakeTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    running_polls: int | None = 0
    outcome: str = "succeeded"
    poll_errors: int = 0
    break_batch: bool = False
    submit_delay: float = 0.0
    lost_answers: int = 0
    poll_interval: float | None = None
    tracker: str = "fakejobs"


def log(root: Path, *words: object) -> None:
    with open(root / "events.log", "a") as fh:
        fh.write(" ".join(str(w) for w in words) + "\\n")


def save(path: Path, state: dict[str, Any]) -> None:
    """Atomically, as a real service keeps its state: ork may be killed while a poll writes it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def handle_for(job_id: str, task: FakeTask) -> Deferred:
    handle = {"job": job_id, "break": task.break_batch, "interval": task.poll_interval}
    return Deferred(task.tracker, handle, link=f"fake://jobs/{job_id}", external_id=job_id)


@executor(task_config=FakeTask)
class FakeExecutor:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Deferred:
        task = FakeTask.model_validate(ctx.task_config)
        key = ctx.idempotency_key
        n = len(list((self.root / "jobs").glob(f"{key}.*.json")))
        job_id = f"{key}.{n}"
        state = {"spec": task.model_dump(), "polls": 0, "answered": 0, "errors_left": task.poll_errors}
        save(self.root / "jobs" / f"{job_id}.json", state)
        log(self.root, "submit", key, job_id, os.getpid())
        if task.submit_delay:
            time.sleep(task.submit_delay)
        if n < task.lost_answers:  # the service took the job; its answer never arrived
            raise KickoffUncertain(f"submit {job_id}: no answer")
        return handle_for(job_id, task)

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        log(self.root, "adopt", key)
        found = sorted((self.root / "jobs").glob(f"{key}.*.json"))
        if not self.config.adopt or not found:
            return None
        return handle_for(found[0].name[: -len(".json")], FakeTask.model_validate(ctx.task_config))


class FakeTracker:
    def __init__(self, executor: FakeExecutor) -> None:
        self.root = executor.root
        self.poll_interval = executor.config.poll_interval
        self.max_poll_failures = executor.config.max_poll_failures
        self.max_backoff = executor.config.max_backoff

    def poll_interval_for(self, handle: dict[str, Any]) -> float | None:
        return handle.get("interval")

    def poll(self, handles: list[dict[str, Any]]) -> list[Any]:
        log(self.root, "pollcall", len(handles))
        if any(h.get("break") for h in handles):
            raise ValueError("malformed handle")
        return [self._one(h["job"]) for h in handles]

    def _one(self, job_id: str) -> Any:
        path = self.root / "jobs" / f"{job_id}.json"
        state = json.loads(path.read_text())
        state["polls"] += 1
        log(self.root, "poll", job_id, repr(time.time()))
        if state["errors_left"] > 0:
            state["errors_left"] -= 1
            save(path, state)
            return ConnectionError(f"status of {job_id}: 503")
        state["answered"] += 1
        save(path, state)
        spec = state["spec"]
        end = self.root / "jobs" / f"{job_id}.end"
        if spec["running_polls"] is None:
            if not end.exists():
                return JobStatus.running()
            outcome = end.read_text().strip()
        elif state["answered"] <= spec["running_polls"]:
            return JobStatus.running()
        else:
            outcome = spec["outcome"]
        if outcome == "succeeded":
            return JobStatus.succeeded({"job": job_id, "polls": state["polls"]})
        return JobStatus.failed(f"job {job_id} failed")

    def cancel(self, handle: dict[str, Any]) -> None:
        (self.root / "jobs" / f"{handle['job']}.cancelled").touch()
        log(self.root, "cancel", handle["job"])


@hookimpl
def ork_register_executors(register):
    register("fakejobs", "ork_fakejobs:FakeExecutor")


@hookimpl
def ork_register_job_trackers(register):
    register("fakejobs", "ork_fakejobs:FakeTracker")
'''


@dataclass
class Fake:
    """A project whose `jobs` executor talks to the fake service under `root`."""

    tmp: Path
    site: Path
    project: Path
    root: Path

    def configure(self, **config: Any) -> None:
        settings = {"root": str(self.root), **config}
        text = yaml.safe_dump({"executors": {"jobs": {"type": "fakejobs", "config": settings}}})
        (self.project / "ork.yaml").write_text(text)

    def workflow(self, tasks: dict[str, dict[str, Any]], name: str = "wf") -> Path:
        path = self.project / f"{name}.yaml"
        full = {t: {"executor": "jobs", **spec} for t, spec in tasks.items()}
        path.write_text(yaml.safe_dump({"name": name, "tasks": full}, sort_keys=False))
        return path

    def events(self, kind: str | None = None) -> list[list[str]]:
        log = self.root / "events.log"
        lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
        return [words for words in lines if kind is None or words[0] == kind]

    def poll_times(self, job_id: str) -> list[float]:
        return [float(w[2]) for w in self.events("poll") if w[1] == job_id]

    def end_job(self, job_id: str, outcome: str = "succeeded") -> None:
        (self.root / "jobs" / f"{job_id}.end").write_text(outcome)

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(self.site), "ORK_PLUGINS": "fakejobs"}
        env.pop("ORK_DB", None)
        return env

    def ork(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "ork_core", *args], cwd=self.project, env=self.env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )

    def ork_done(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        proc = self.ork(*args)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            _stop(proc)
        return proc.returncode, out, err

    def storage(self) -> Any:
        plugins = build_plugin_manager({"ORK_PLUGINS": "fakejobs"})
        return open_storage(storage_url(None, self.project, None, env={}), plugins.registry)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    site = tmp_path / "site"
    info = site / "ork_fakejobs-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ork-fakejobs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ork]\nfakejobs = ork_fakejobs\n")
    (site / "ork_fakejobs.py").write_text(textwrap.dedent(FAKE_PLUGIN))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("ORK_DB", raising=False)
    project = tmp_path / "proj"
    project.mkdir()
    made = Fake(tmp_path, site, project, tmp_path / "service")
    made.configure()
    return made


def scheduler_for(fake: Fake, workflow: Path) -> tuple[Scheduler, Any]:
    plugins = build_plugin_manager({"ORK_PLUGINS": "fakejobs"})
    project = Project.load(fake.project, plugins, env={})
    compiled = load_workflow(workflow, project)
    storage = open_storage(storage_url(None, project.dir, None, env={}), plugins.registry)
    run_id = create_run(storage, compiled, dict(compiled.params))
    return Scheduler(project=project, plugins=plugins, storage=storage, workflow=compiled, run_id=run_id, params={}), storage


def run_inline(fake: Fake, tasks: dict[str, dict[str, Any]]) -> tuple[RunResult, RunRecord]:
    scheduler, storage = scheduler_for(fake, fake.workflow(tasks))
    try:
        result = execute(scheduler, handle_signals=False)
        return result, storage.get_run(result.run_id)
    finally:
        storage.close()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


# --- in one process ------------------------------------------------------------------------


def test_deferred_job_is_committed_polled_and_its_output_stored(fake: Fake) -> None:
    result, run = run_inline(fake, {"a": {"running_polls": 2}, "b": {"depends_on": ["a"]}})
    assert result.status == "success"
    a = run.tasks["a"]
    job_id = f"{a.idempotency_key}.0"
    assert a.output == {"job": job_id, "polls": 3}
    assert (a.tracker, a.handle, a.external_id, a.link) == (
        "fakejobs", {"job": job_id, "break": False, "interval": None}, job_id, f"fake://jobs/{job_id}"
    )
    assert a.deferred_at is not None and a.last_poll_at is not None and a.attempt == 1
    assert [w[1] for w in fake.events("submit")] == [a.idempotency_key, run.tasks["b"].idempotency_key]
    assert fake.events("cancel") == []


def test_poll_interval_from_the_tracker_and_per_handle(fake: Fake) -> None:
    fake.configure(poll_interval=0.25)
    result, run = run_inline(fake, {"slow": {"running_polls": 3}, "fast": {"running_polls": 6, "poll_interval": 0.08}})
    assert result.status == "success"
    slow = gaps(fake.poll_times(f"{run.tasks['slow'].idempotency_key}.0"))
    fast = gaps(fake.poll_times(f"{run.tasks['fast'].idempotency_key}.0"))
    assert len(slow) == 3 and len(fast) == 6
    # never sooner than the interval less 10% (a job may join a batch that is due a little early)
    assert all(0.225 <= g < 0.4 for g in slow), slow
    assert all(0.072 <= g < 0.17 for g in fast), fast


def test_failed_polls_back_off_then_the_normal_interval_returns(fake: Fake) -> None:
    fake.configure(poll_interval=0.04, max_backoff=0.2)
    result, run = run_inline(fake, {"flaky": {"poll_errors": 4, "running_polls": 2}})
    assert result.status == "success"
    g = gaps(fake.poll_times(f"{run.tasks['flaky'].idempotency_key}.0"))
    # after error 1, 2, 3, 4: 2x, 4x, then capped at max_backoff; after a good answer: the interval again
    assert 0.076 <= g[0] < 0.15 and 0.156 <= g[1] < 0.3, g
    assert 0.196 <= g[2] < 0.35 and 0.196 <= g[3] < 0.35, g
    assert 0.036 <= g[4] < 0.12 and 0.036 <= g[5] < 0.12, g
    assert run.tasks["flaky"].poll_failures == 0 and run.tasks["flaky"].last_poll_error is None


def test_one_failing_handle_never_fails_the_batch(fake: Fake) -> None:
    fake.configure(poll_interval=0.05, max_poll_failures=3, max_backoff=0.1)
    tasks: dict[str, dict[str, Any]] = {f"ok{i}": {"running_polls": 2} for i in range(6)}
    tasks["broken"] = {"break_batch": True}
    result, run = run_inline(fake, tasks)
    assert result.status == "failed"
    assert all(run.tasks[f"ok{i}"].status == "success" for i in range(6))
    broken = run.tasks["broken"]
    assert broken.status == "failed"
    assert broken.error == "polling failed 3 times in a row; last error: ValueError: malformed handle"
    assert any(int(w[1]) > 1 for w in fake.events("pollcall")), "jobs were never polled together"


def test_consecutive_poll_failures_fail_the_task_and_cancel_the_job(fake: Fake) -> None:
    fake.configure(poll_interval=0.03, max_poll_failures=4, max_backoff=0.05)
    result, run = run_inline(fake, {"down": {"poll_errors": 100}, "recovers": {"poll_errors": 3, "running_polls": 1}})
    down, recovers = run.tasks["down"], run.tasks["recovers"]
    assert down.status == "failed" and recovers.status == "success"
    job_id = f"{down.idempotency_key}.0"
    assert down.error == f"polling failed 4 times in a row; last error: ConnectionError: status of {job_id}: 503"
    assert len(fake.poll_times(job_id)) == 4
    assert [w[1] for w in fake.events("cancel")] == [job_id]


def test_timeout_spans_the_deferral_cancels_the_job_and_a_retry_gets_a_new_key(fake: Fake) -> None:
    fake.configure(poll_interval=30)  # the deadline must not wait for a poll
    started = time.monotonic()
    result, run = run_inline(fake, {"stuck": {"running_polls": None, "timeout": 0.5, "retries": 1}})
    assert time.monotonic() - started < 5
    stuck = run.tasks["stuck"]
    assert result.status == "failed" and stuck.status == "failed" and stuck.attempt == 2
    assert stuck.error == "timed out after 0.5s (the external job was cancelled)"
    submits = [w[1] for w in fake.events("submit")]
    assert len(submits) == 2 and submits[0] != submits[1] and submits[1] == stuck.idempotency_key
    assert sorted(w[1] for w in fake.events("cancel")) == sorted(f"{k}.0" for k in submits)
    assert fake.events("poll") == []


def test_an_uncertain_submit_is_retried_under_the_same_key_and_adopted(fake: Fake) -> None:
    result, run = run_inline(fake, {"t": {"lost_answers": 1, "retries": 1}})
    assert result.status == "success", run.tasks["t"].error
    key = run.tasks["t"].idempotency_key
    assert fake.events("submit")[0][1:3] == [key, f"{key}.0"] and len(fake.events("submit")) == 1
    assert [words[1] for words in fake.events("adopt")] == [key]
    assert run.tasks["t"].output["job"] == f"{key}.0" and run.tasks["t"].try_number == 1


def test_an_uncertain_submit_without_adopt_is_sent_again_with_the_same_key(fake: Fake) -> None:
    fake.configure(adopt=False)
    result, run = run_inline(fake, {"t": {"lost_answers": 1, "retries": 1}})
    assert result.status == "success", run.tasks["t"].error
    key = run.tasks["t"].idempotency_key
    assert [words[1:3] for words in fake.events("submit")] == [[key, f"{key}.0"], [key, f"{key}.1"]]


def test_uncertain_submits_spend_the_retries(fake: Fake) -> None:
    fake.configure(adopt=False)
    result, run = run_inline(fake, {"t": {"lost_answers": 9, "retries": 2}})
    assert result.status == "failed" and run.tasks["t"].attempt == 3 and run.tasks["t"].try_number == 1
    assert run.tasks["t"].error is not None and run.tasks["t"].error.startswith("submit ")
    storage = fake.storage()
    attempts = storage.attempts(run.id)
    storage.close()
    assert [(a.try_number, a.status) for a in attempts] == [(1, "failed")] * 3
    assert all("kickoff uncertain" in (a.error or "") for a in attempts[:2])


def test_unknown_tracker_fails_that_task_not_the_run(fake: Fake) -> None:
    _, run = run_inline(fake, {"typo": {"tracker": "fakejob"}, "fine": {"running_polls": 1}})
    assert run.tasks["fine"].status == "success"
    assert run.tasks["typo"].status == "failed"
    assert "unknown job tracker 'fakejob'; did you mean 'fakejobs'?" in (run.tasks["typo"].error or "")


def test_thousands_of_deferred_jobs_cost_one_process_and_a_few_threads(fake: Fake) -> None:
    fake.configure(poll_interval=0.3)
    n = 2000
    scheduler, storage = scheduler_for(fake, fake.workflow({f"t{i}": {"running_polls": 2} for i in range(n)}))
    peak = {"threads": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak["threads"] = max(peak["threads"], threading.active_count())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        result = execute(scheduler, handle_signals=False)
    finally:
        stop.set()
        watcher.join()
    took = time.monotonic() - started
    run = storage.get_run(result.run_id)
    storage.close()
    assert result.status == "success"
    assert sum(t.status == "success" for t in run.tasks.values()) == n
    assert len(fake.events("submit")) == n
    assert peak["threads"] < 60, peak
    calls = [int(w[1]) for w in fake.events("pollcall")]
    assert max(calls) == 200 and sum(calls) == len(fake.events("poll")) == 3 * n
    assert took < 60, took


def test_user_cancel_cancels_every_deferred_job(fake: Fake) -> None:
    fake.configure(poll_interval=0.05)
    scheduler, storage = scheduler_for(fake, fake.workflow({f"t{i}": {"running_polls": None} for i in range(5)}))
    box: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", execute(scheduler, handle_signals=False)))
    thread.start()
    try:
        wait_for(lambda: len({w[1] for w in fake.events("poll")}) == 5, what="five polled jobs")
        scheduler.request_cancel()
    finally:
        thread.join(30)
    run = storage.get_run(box["r"].run_id)
    storage.close()
    assert box["r"].status == "cancelled"
    assert {t.status for t in run.tasks.values()} == {"cancelled"}
    assert sorted(w[1] for w in fake.events("cancel")) == sorted(w[2] for w in fake.events("submit"))


# --- across processes: kill -9, signals, `ork resume`, `ork jobs` -------------------------------


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            _stop(proc)


def test_restart_never_cancels_and_resume_polls_without_running_again(fake: Fake, procs: list[subprocess.Popen[str]]) -> None:
    fake.configure(poll_interval=0.1)
    fake.workflow({"long": {"running_polls": None}, "after": {"depends_on": ["long"], "running_polls": 1}})
    proc = fake.ork("run", "wf.yaml")
    procs.append(proc)
    job_id = wait_for(lambda: next((w[1] for w in fake.events("poll")), None), what="the first poll")
    wait_for(lambda: len(fake.poll_times(job_id)) >= 2, what="a second poll")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    polls_before = len(fake.poll_times(job_id))
    code, out, err = fake.ork_done("jobs", "--json")
    assert code == 0, err
    (job,) = json.loads(out)
    assert (job["task"], job["executor"], job["tracker"], job["external_id"]) == ("long", "jobs", "fakejobs", job_id)
    assert job["link"] == f"fake://jobs/{job_id}" and job["deferred_since"] and job["last_poll"]
    fake.end_job(job_id)
    code, out, err = fake.ork_done("resume")
    assert code == 0, out + err
    assert len(fake.poll_times(job_id)) > polls_before
    assert [w[2] for w in fake.events("submit")][:1] == [job_id]
    assert len(fake.events("submit")) == 2  # `long` once, `after` once
    assert fake.events("cancel") == [] and fake.events("adopt") == []
    code, out, _ = fake.ork_done("jobs", "--json")
    assert json.loads(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_ork_but_leaves_the_job_and_resume_polls_it(
    fake: Fake, procs: list[subprocess.Popen[str]], sig: int
) -> None:
    fake.configure(poll_interval=0.1)
    fake.workflow({"long": {"running_polls": None}})
    proc = fake.ork("run", "wf.yaml")
    procs.append(proc)
    job_id = wait_for(lambda: next((w[1] for w in fake.events("poll")), None), what="the first poll")
    proc.send_signal(sig)
    assert proc.wait(30) == 128 + sig
    assert fake.events("cancel") == []  # a restart must not cancel the external job
    storage = fake.storage()
    (run,) = storage.list_runs()
    assert run.status == "stopped"
    assert storage.get_run(run.id).tasks["long"].status == "deferred"
    storage.close()
    fake.end_job(job_id)
    code, out, err = fake.ork_done("resume")
    assert code == 0, out + err
    assert [w[2] for w in fake.events("submit")] == [job_id]  # polled again, never submitted again
    assert fake.events("cancel") == [] and fake.events("adopt") == []


@pytest.mark.parametrize("adopts", [True, False])
def test_resume_adopts_a_job_submitted_before_its_handle_was_committed(
    fake: Fake, procs: list[subprocess.Popen[str]], adopts: bool
) -> None:
    fake.configure(poll_interval=0.1, adopt=adopts)
    fake.workflow({"submit": {"submit_delay": 60, "running_polls": 1}})
    proc = fake.ork("run", "wf.yaml")
    procs.append(proc)
    key = wait_for(lambda: next((w[1] for w in fake.events("submit")), None), what="the submission")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage = fake.storage()
    (run,) = storage.list_runs()
    assert storage.get_run(run.id).tasks["submit"].status == "running"
    storage.close()
    if adopts:
        code, out, err = fake.ork_done("resume")
        assert code == 0, out + err
        assert [w[1] for w in fake.events("adopt")] == [key]
        assert [w[1] for w in fake.events("submit")] == [key]  # submitted once, then adopted
        assert len(fake.poll_times(f"{key}.0")) == 2
    else:
        proc = fake.ork("resume")
        procs.append(proc)
        wait_for(lambda: len(fake.events("submit")) == 2, what="the second submission")
        # without an adoptable job, run() is called again with the same idempotency key
        assert [w[1] for w in fake.events("submit")] == [key, key]
        assert [w[1] for w in fake.events("adopt")] == [key]
