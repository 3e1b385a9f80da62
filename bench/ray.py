"""Benchmark: 1,000 tiny Python tasks through ``ray_actor`` against direct Ray actor calls.

Both sides are timed as whole processes, and both start their own throwaway Ray cluster
(``address: local`` for ork, ``ray.init(address="local")`` for the baseline), so the
cluster start is included on both sides:

- baseline: one script that starts 2 actors and makes the same 1,000 calls with actor
  method calls, all submitted at once (``ray.get([actors[i % 2].f.remote(i) …])``): the
  fastest a Ray user writes it, the calls pipelined on the actors;
- ork: ``ork run --concurrency 2`` on a workflow of 1,000 independent ``ray_actor`` tasks
  calling the same function on a pool of 2 actors, with a fresh state database each time.

Runs alternate (baseline, ork, baseline, ork …) so a change in machine load hits both, and
the medians are compared. Target: ork ≤ 1.3 × the baseline.

The cluster start (seconds, and noisy on a busy machine) dominates both walls, so the cost
per task is measured inside each run once the actors are warm: the baseline times its
calls after one warm-up call per actor; for ork, the state database gives the span from the
moment every actor had finished its first task to the last task's end. The difference,
per task, is ork's added latency (wall time, ``--actors`` tasks at a time).

    .venv/bin/python bench/ray.py [--tasks 1000] [--actors 2] [--runs 5]

Ray's session files go to a temporary folder (``RAY_TMPDIR``) and its token to a file of its
own (``RAY_AUTH_TOKEN_PATH``), removed at the end; nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

FUNCTION = """
def tiny(i: int) -> int:
    return i + 1
"""

BASELINE = """
import sys, time
import ray

n, actors = int(sys.argv[1]), int(sys.argv[2])
ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
         configure_logging=False)


@ray.remote(max_concurrency=1, max_restarts=0, num_cpus=CPUS)
class Worker:
    def tiny(self, i: int) -> int:
        return i + 1


pool = [Worker.remote() for _ in range(actors)]
ray.get([actor.tiny.remote(0) for actor in pool])  # the actors are up
started = time.perf_counter()
results = ray.get([pool[i % actors].tiny.remote(i) for i in range(n)])
print("calls", time.perf_counter() - started)
assert results == [i + 1 for i in range(n)]
for actor in pool:
    ray.kill(actor)
ray.shutdown()
"""


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORK_", "RAY_"))}
    env.update({
        "RAY_TMPDIR": str(folder / "ray"), "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(folder / "auth_token"), "ORK_PLUGINS": "ray",
    })
    return env


def _project(folder: Path, tasks: int, actors: int, cpus: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.py").write_text(FUNCTION)
    config = {"address": "local", "num_actors": actors, "num_cpus": cpus}
    (folder / "ork.yaml").write_text(yaml.safe_dump({"executors": {"actors": {"type": "ray_actor", "config": config}}}))
    doc = {"name": "bench-ray", "tasks": {
        f"t{i}": {"executor": "actors", "file": "tiny.py", "function": "tiny", "inputs": {"i": {"const": i}}}
        for i in range(tasks)
    }}
    workflow = folder / "wf.yaml"
    workflow.write_text(yaml.safe_dump(doc, sort_keys=False))
    return workflow


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def _baseline(script: Path, root: Path, env: dict[str, str], tasks: int, actors: int) -> tuple[float, float]:
    """Wall of the whole process, and seconds of its calls once the actors were warm."""
    wall, out = _timed([sys.executable, str(script), str(tasks), str(actors)], root, env)
    calls = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("calls "))
    return wall, calls / tasks


def _ork(folder: Path, workflow: Path, env: dict[str, str], actors: int) -> tuple[float, float]:
    """Wall of ``ork run``, and seconds per task once every actor had finished its first one."""
    from ork_core.plugins import build_plugin_manager
    from ork_core.storage import open_storage

    shutil.rmtree(folder / ".ork", ignore_errors=True)
    ork = str(Path(sys.executable).with_name("ork"))
    wall, _ = _timed([ork, "run", "-q", "--concurrency", str(actors), workflow.name], folder, env)
    storage = open_storage(f"sqlite:///{folder / '.ork' / 'ork.db'}", build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}).registry)
    try:
        (run,) = storage.list_runs()
        ends = sorted(t.finished_at for t in storage.get_run(run.id).tasks.values() if t.finished_at is not None)
    finally:
        storage.close()
    return wall, (ends[-1] - ends[actors - 1]) / (len(ends) - actors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus", type=float, default=0.5, help="num_cpus per actor (the machine may have 2)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="orkb-", dir="/tmp"))  # short: Ray's socket paths live below it
    try:
        (root / "auth_token").write_text(secrets.token_hex(32))
        env = _env(root)
        many = _project(root / "many", args.tasks, args.actors, args.cpus)
        warm = _project(root / "warm", args.actors + 2, args.actors, args.cpus)
        script = root / "baseline.py"
        script.write_text(BASELINE.replace("CPUS", repr(args.cpus)))
        print("warm-up (bytecode caches, first cluster start) …", flush=True)
        _baseline(script, root, env, 10, args.actors)
        _ork(warm.parent, warm, env, args.actors)
        walls: dict[str, list[float]] = {"baseline": [], "ork": []}
        per_task: dict[str, list[float]] = {"baseline": [], "ork": []}
        for run in range(args.runs):
            for side, measure in (("baseline", lambda: _baseline(script, root, env, args.tasks, args.actors)),
                                  ("ork", lambda: _ork(many.parent, many, env, args.actors))):
                wall, each = measure()
                walls[side].append(wall)
                per_task[side].append(each)
            print(f"run {run + 1}/{args.runs}: baseline {walls['baseline'][-1]:.2f}s, ork {walls['ork'][-1]:.2f}s "
                  f"(warm, per task: {per_task['baseline'][-1] * 1e3:.2f} ms / {per_task['ork'][-1] * 1e3:.2f} ms)", flush=True)
        med = {k: statistics.median(v) for k, v in walls.items()}
        each = {k: statistics.median(v) for k, v in per_task.items()}
        print()
        print(f"{args.tasks} tasks, {args.actors} actors, medians of {args.runs} runs (whole processes, cluster start included):")
        print(f"  baseline (direct actor calls): {med['baseline']:.2f} s")
        print(f"  ork run (ray_actor):           {med['ork']:.2f} s")
        print(f"  ratio ork / baseline: {med['ork'] / med['baseline']:.2f} ×   (target ≤ 1.3 ×)")
        print(f"  per task with warm actors: baseline {each['baseline'] * 1e3:.2f} ms, ork {each['ork'] * 1e3:.2f} ms "
              f"→ ork adds {(each['ork'] - each['baseline']) * 1e3:.2f} ms per task ({args.actors} at a time)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
