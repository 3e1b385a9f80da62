"""`ork scheduler` and deferred jobs: a stop leaves the external job running, the next scheduler adopts it."""

from __future__ import annotations

import signal
import subprocess

from http_harness import HttpProject, job_task
from http_test_server import wait_until


def test_sigterm_to_the_scheduler_leaves_the_job_running_and_a_restart_adopts_it(
    proj: HttpProject, procs: list[subprocess.Popen[str]]
) -> None:
    proj.workflow({"query": job_task(job={"outcome": "forever"}, poll_interval=0.1)})
    rec = proj.server.recorder
    code, out, err = proj.ork_done("trigger", "wf.yaml")
    assert code == 0, err
    run_id = out.strip()
    first = proj.ork("scheduler", "--poll", "0.1", "wf.yaml")
    procs.append(first)
    wait_until(lambda: "r1" in rec.jobs and rec.jobs["r1"].status_requests >= 1, what="the job being polled")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 128 + signal.SIGTERM
    assert rec.cancels == []  # a restart must not cancel the external job
    storage = proj.storage()
    assert storage.get_run(run_id).status == "stopped"
    rec.jobs["r1"].spec["outcome"] = "succeed"
    second = proj.ork("scheduler", "--poll", "0.1", "wf.yaml")
    procs.append(second)
    wait_until(lambda: storage.get_run(run_id).status == "success", what="the adopted job to finish the run")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 128 + signal.SIGTERM
    assert rec.kickoffs == 1 and list(rec.jobs) == ["r1"] and rec.cancels == []
    assert storage.get_run(run_id).tasks["query"].output == {"rows": 42, "job": "r1"}
    storage.close()


def test_a_killed_schedulers_job_is_tracked_by_another_after_its_lease_not_submitted_again(
    proj: HttpProject, procs: list[subprocess.Popen[str]]
) -> None:
    """Two schedulers on one state database, as two hosts (ORK_HOST): only the lease tells the living one."""
    import os
    import time

    proj.workflow({"query": job_task(job={"outcome": "forever"}, poll_interval=0.1)})
    rec = proj.server.recorder
    code, out, err = proj.ork_done("trigger", "wf.yaml")
    assert code == 0, err
    run_id = out.strip()
    lease = {"ORK_SCHEDULER_LEASE": "1"}
    first = proj.ork("scheduler", "--poll", "0.1", "wf.yaml", env={"ORK_HOST": "host-a", **lease})
    procs.append(first)
    wait_until(lambda: "r1" in rec.jobs and rec.jobs["r1"].status_requests >= 1, what="the job being polled")
    second = proj.ork("scheduler", "--poll", "0.1", "wf.yaml", env={"ORK_HOST": "host-b", **lease})
    procs.append(second)
    storage = proj.storage()
    time.sleep(2.5)  # host-b is up and has looked at the run many times: it is host-a's, leased
    assert (storage.get_run(run_id).owner or "").startswith("host-a/"), "taken from a live scheduler"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    polled = rec.jobs["r1"].status_requests
    wait_until(lambda: rec.jobs["r1"].status_requests > polled + 2, what="host-b tracking the job", timeout=30)
    assert (storage.get_run(run_id).owner or "").startswith("host-b/")
    rec.jobs["r1"].spec["outcome"] = "succeed"
    wait_until(lambda: storage.get_run(run_id).status == "success", what="the adopted job to finish the run")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 128 + signal.SIGTERM
    assert second.stderr is not None and "adopted from process" in second.stderr.read()
    assert rec.kickoffs == 1 and list(rec.jobs) == ["r1"] and rec.cancels == []
    assert storage.get_run(run_id).tasks["query"].output == {"rows": 42, "job": "r1"}
    storage.close()
