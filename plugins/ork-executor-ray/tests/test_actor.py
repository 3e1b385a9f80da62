"""``ray_actor`` on the real test cluster: data along a DAG, failures, timeouts, dead actors."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ray_cluster import alive
from ray_harness import RayProject

FUNCS = """
    import os, time
    from pathlib import Path

    def numbers(n: int) -> list[int]:
        return list(range(n))

    def total(values: list[int], factor: int = 1) -> dict:
        print("adding", len(values), "values")
        return {"sum": sum(values) * factor, "pid": os.getpid()}

    def describe(ctx, upstream) -> str:
        ctx.log.info("task %s saw %s", ctx.task_name, sorted(upstream))
        return f"sum={upstream['total']['sum']}"

    def boom(what: str) -> None:
        raise ValueError(f"bad {what}")

    def beat(path: str, seconds: float = 60) -> None:
        Path(path + ".pid").write_text(str(os.getpid()))
        end = time.time() + seconds
        while time.time() < end:
            with open(path, "a") as f:
                f.write(".")
            time.sleep(0.05)

    def die_once(marker: str) -> int:
        if not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(3)
        return os.getpid()
"""


def _task(function: str, **inputs: object) -> dict[str, object]:
    return {"executor": "actors", "file": "funcs.py", "function": function,
            "inputs": {k: {"const": v} for k, v in inputs.items()}}


def test_outputs_flow_along_a_dag(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    result, run = proj.run({
        "numbers": _task("numbers", n=5),
        "total": {**_task("total", factor=2), "inputs": {"values": {"ref": "tasks.numbers.output"}, "factor": {"const": 2}},
                  "depends_on": ["numbers"]},
        "describe": {**_task("describe"), "depends_on": ["total"]},
    })
    assert result.status == "success", result.errors
    assert run.tasks["numbers"].output == [0, 1, 2, 3, 4]
    assert run.tasks["total"].output["sum"] == 20
    assert run.tasks["total"].output["pid"] != os.getpid()  # ran in an actor, not in ork
    assert run.tasks["describe"].output == "sum=20"
    assert "stdout: adding 5 values" in proj.logs(run.id, "total")
    assert "task describe saw ['total']" in proj.logs(run.id, "describe")
    actor = run.tasks["total"].output["pid"]
    deadline = time.monotonic() + 15
    while alive(actor) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(actor), "the run's actors must be killed when it ends"


def test_an_exception_fails_the_task_with_the_remote_traceback(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    result, run = proj.run({"boom": _task("boom", what="input")})
    assert result.status == "failed"
    task = run.tasks["boom"]
    assert task.status == "failed"
    assert task.error is not None and "funcs.py:boom raised ValueError: bad input" in task.error
    logs = proj.logs(run.id, "boom")
    assert "remote traceback (Ray actor" in logs and 'raise ValueError(f"bad {what}")' in logs


def test_bad_inputs_are_named(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    result, run = proj.run({"t": _task("numbers", n="many")})
    assert result.status == "failed"
    assert "argument 'n' is invalid" in (run.tasks["t"].error or "")


def test_a_timeout_stops_the_remote_function(proj: RayProject, tmp_path: Path) -> None:
    proj.file("funcs.py", FUNCS)
    beats = tmp_path / "beats"
    started = time.monotonic()
    result, run = proj.run({"slow": {**_task("beat", path=str(beats)), "timeout": 2}})
    assert result.status == "failed"
    assert "timed out" in (run.tasks["slow"].error or "")
    assert time.monotonic() - started < 30
    pid = int(Path(str(beats) + ".pid").read_text())
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the actor running the timed-out function is still alive"
    size = beats.stat().st_size
    time.sleep(0.5)
    assert beats.stat().st_size == size, "the function kept running after the timeout"


def test_a_dead_actor_is_replaced_and_the_task_retried(proj: RayProject, tmp_path: Path) -> None:
    proj.file("funcs.py", FUNCS)
    marker = tmp_path / "died"
    result, run = proj.run({"fragile": {**_task("die_once", marker=str(marker)), "retries": 1, "retry_delay": 0}})
    assert result.status == "success", result.errors
    task = run.tasks["fragile"]
    assert task.attempt == 2
    first = int(marker.read_text())
    assert task.output != first and not alive(first)


def test_an_actor_killed_mid_task_fails_it_and_a_retry_succeeds(proj: RayProject, tmp_path: Path) -> None:
    import threading

    import ray

    proj.file("funcs.py", FUNCS)
    beats = tmp_path / "beats"
    pid_file = Path(str(beats) + ".pid")

    def kill_actor() -> None:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(pid_file.read_text()), 9)

    killer = threading.Thread(target=kill_actor)
    killer.start()
    result, run = proj.run({"victim": {**_task("beat", path=str(beats), seconds=1), "retries": 1, "retry_delay": 0}})
    killer.join()
    assert result.status == "success", result.errors
    assert run.tasks["victim"].attempt == 2
    assert ray.is_initialized()


def test_validate_names_the_missing_function(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    proj.workflow({"t": _task("numbrs", n=1)})
    code, out, err = proj.ork_done("validate", "wf.yaml")
    assert code != 0
    assert "tasks.t.function" in out + err and "did you mean 'numbers'" in out + err


def test_ctrl_c_of_ork_run_stops_the_remote_function(proj: RayProject, tmp_path: Path, procs: list) -> None:
    import signal

    proj.file("funcs.py", FUNCS)
    beats = tmp_path / "beats"
    proj.workflow({"slow": _task("beat", path=str(beats))})
    proc = proj.ork("run", "wf.yaml")
    procs.append(proc)
    pid_file = Path(str(beats) + ".pid")
    deadline = time.monotonic() + 90
    while not pid_file.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the function never started"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the actor outlived ork's Ctrl-C"
    size = beats.stat().st_size
    time.sleep(0.5)
    assert beats.stat().st_size == size


def _ray_daemons() -> set[int]:
    from ray_cluster import descendants

    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"raylet" in cmdline or b"gcs_server" in cmdline:
                found.add(int(entry))
    return descendants(found)


def test_address_local_starts_a_throwaway_cluster_and_ends_it(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    proj.configure(actor={"address": "local", "num_actors": 1, "num_cpus": 0.5})
    proj.workflow({"numbers": _task("numbers", n=3)})
    before = _ray_daemons()
    code, out, err = proj.ork_done("run", "wf.yaml")
    assert code == 0, out + err
    time.sleep(1)
    left = [p for p in _ray_daemons() - before if alive(p)]
    assert not left, f"the local cluster's processes outlived the run: {left}"


def test_a_bad_executor_config_names_the_field(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    proj.configure(actor={"num_actors": 0}, job={"dashboard_url": "localhost:8265"})
    proj.workflow({"a": _task("numbers", n=1), "j": {"executor": "jobs", "entrypoint": "true"}})
    code, out, err = proj.ork_done("validate", "wf.yaml")
    assert code != 0
    assert "executors.actors.config.num_actors" in out + err, out + err
    assert "executors.jobs.config.dashboard_url" in out + err and "http://" in out + err, out + err


def test_python_only_keys_are_refused_with_the_reason(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    proj.workflow({"a": {**_task("numbers", n=1), "isolation": "process"}})
    code, out, err = proj.ork_done("validate", "wf.yaml")
    assert code != 0
    assert "'isolation' is a key of the python executor" in out + err, out + err


def test_the_actors_import_neither_ork_nor_the_plugin(proj: RayProject) -> None:
    """The calling code reaches the actors by value, so a cluster without ork installed works."""
    proj.file("mods.py", """
        import sys

        def ork_modules() -> list:
            return sorted(m for m in sys.modules if m == "ork" or m.startswith(("ork.", "ork_core", "ork_executor_ray")))
    """)
    result, run = proj.run({"mods": {**_task("ork_modules"), "file": "mods.py"}})
    assert result.status == "success", result.errors
    assert run.tasks["mods"].output == []


def test_an_actor_that_cannot_start_fails_the_task_with_ray_s_reason(proj: RayProject) -> None:
    proj.file("funcs.py", FUNCS)
    task = {**_task("numbers", n=1), "runtime_env": {"working_dir": str(proj.dir / "no-such-folder")}}
    result, run = proj.run({"t": task})
    assert result.status == "failed"
    error = run.tasks["t"].error or ""
    assert "cannot start a Ray actor" in error or "actor running it died" in error, error
    assert "no-such-folder" in error, error
