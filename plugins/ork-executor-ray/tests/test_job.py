"""``ray_job`` on the real test cluster: success, failure, logs, timeout, and kill -9 + resume."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ray_harness import RayProject

SCRIPT = """
import os, sys, time
from pathlib import Path

mode = sys.argv[1]
print("job starting in", Path.cwd().name, flush=True)
if mode == "fail":
    print("about to fail", flush=True)
    sys.exit(3)
if mode == "wait":
    release = Path(sys.argv[2])
    Path(str(release) + ".started").write_text(str(os.getpid()))
    while not release.exists():
        time.sleep(0.1)
for i in range(3):
    print(f"line {i}", flush=True)
    time.sleep(0.1)
print("job done", flush=True)
"""


def _client(proj: RayProject) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(proj.cluster.dashboard_url)


def _job(proj: RayProject, *args: str, **keys: Any) -> dict[str, Any]:
    src = proj.dir / "jobsrc"
    src.mkdir(exist_ok=True)
    (src / "script.py").write_text(SCRIPT)
    command = " ".join(shlex.quote(a) for a in (sys.executable, "script.py", *args))
    return {"executor": "jobs", "entrypoint": command, "runtime_env": {"working_dir": "jobsrc"}, **keys}


def _jobs_of(proj: RayProject, run_id: str, task: str) -> list[Any]:
    return [j for j in _client(proj).list_jobs()
            if (j.metadata or {}).get("ork_run_id") == run_id and (j.metadata or {}).get("ork_task") == task]


def test_a_job_succeeds_and_its_logs_are_in_ork_logs(proj: RayProject) -> None:
    result, run = proj.run({"hello": _job(proj, "ok", metadata={"team": "data"})})
    assert result.status == "success", result.errors
    task = run.tasks["hello"]
    assert task.output["status"] == "SUCCEEDED" and task.output["driver_exit_code"] == 0
    (job,) = _jobs_of(proj, run.id, "hello")
    assert job.submission_id == task.output["submission_id"]
    assert job.metadata["team"] == "data" and job.metadata["ork_key"] == job.submission_id
    code, out, err = proj.ork_done("logs", run.id)
    assert code == 0, err
    lines = [line.split(" job: ", 1)[1] for line in out.splitlines() if " job: " in line]
    printed = [line for line in lines if line.startswith(("job ", "line "))]
    assert printed == ["job starting in " + printed[0].rsplit(" ", 1)[-1], "line 0", "line 1", "line 2", "job done"], out


def test_a_failing_job_fails_the_task_with_its_exit_code(proj: RayProject) -> None:
    result, run = proj.run({"bad": _job(proj, "fail")})
    assert result.status == "failed"
    error = run.tasks["bad"].error or ""
    assert "failed (exit code 3)" in error, error
    assert "about to fail" in proj.logs(run.id, "bad")


def test_a_timeout_stops_the_job(proj: RayProject, tmp_path: Path) -> None:
    release = tmp_path / "never"
    result, run = proj.run({"slow": _job(proj, "wait", str(release), timeout=3)})
    assert result.status == "failed"
    assert "timed out" in (run.tasks["slow"].error or "")
    (job,) = _jobs_of(proj, run.id, "slow")
    client = _client(proj)
    deadline = time.monotonic() + 30
    while str(client.get_job_status(job.submission_id).value) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert str(client.get_job_status(job.submission_id).value) == "STOPPED"


def test_kill_9_while_the_job_runs_then_resume_follows_the_same_job(proj: RayProject, tmp_path: Path, procs: list) -> None:
    release = tmp_path / "release"
    proj.workflow({"long": _job(proj, "wait", str(release))})
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)
    started = Path(str(release) + ".started")
    deadline = time.monotonic() + 90
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    storage = proj.storage()
    try:
        (run,) = storage.list_runs()
        while storage.get_run(run.id).tasks["long"].status != "deferred":
            assert time.monotonic() < deadline, "the task was never deferred"
            time.sleep(0.1)
    finally:
        storage.close()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    (job,) = _jobs_of(proj, run.id, "long")
    assert str(job.status.value) == "RUNNING", "killing ork must not stop its job"
    release.write_text("go")
    code, out, err = proj.ork_done("resume")
    assert code == 0, out + err
    storage = proj.storage()
    try:
        after = storage.get_run(run.id)
    finally:
        storage.close()
    assert after.status == "success" and after.tasks["long"].status == "success"
    jobs = _jobs_of(proj, run.id, "long")
    assert len(jobs) == 1 and jobs[0].submission_id == job.submission_id
    assert after.tasks["long"].output["submission_id"] == job.submission_id


def test_validate_names_a_missing_working_dir(proj: RayProject) -> None:
    proj.workflow({"t": {"executor": "jobs", "entrypoint": "python x.py", "runtime_env": {"working_dir": "nowhere"}}})
    code, out, err = proj.ork_done("validate", "wf.yaml")
    assert code != 0
    assert "tasks.t.runtime_env.working_dir" in out + err, out + err
