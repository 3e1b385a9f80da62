"""Benchmark: 1,000 tasks that each run ``true``, through ``ork run``, against plain Python.

Both sides are timed as whole processes (interpreter start, imports and all):

- baseline: one Python process that runs the same ``subprocess.run(["true"])`` calls from a
  2-worker thread pool;
- ork: ``ork run --concurrency 2`` on a workflow of independent ``process`` tasks, with a
  fresh state database each time.

Runs alternate (baseline, ork, baseline, ork …) so a change in machine load hits both, and
the medians are compared. Target: ork ≤ 1.3 × baseline.

Where the difference comes from, also measured each run: both sides once more with a single
task (the fixed cost: interpreter, imports, for ork also plugins, workflow, state database),
so ``(whole - one task) / (tasks - 1)`` is the cost per task; a process that only imports
what ``ork run`` of this workflow imports, one that only imports pydantic and builds a model,
and a bare interpreter.

    .venv/bin/python bench/process.py [--tasks 1000] [--concurrency 2] [--runs 7] [--profile]

``--profile`` also runs ork once in-process under cProfile and prints where the time went.

Both children run with Python's bytecode cache enabled (``PYTHONDONTWRITEBYTECODE`` is
removed from their environment), as in a normal installation where pip compiled every
module; the warm-up run writes the cache of the editable checkout. ``--no-bytecode-cache``
keeps the variable (every ``ork`` start then compiles ork's modules from source).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = """
import subprocess, sys
from concurrent.futures import ThreadPoolExecutor
n, workers = int(sys.argv[1]), int(sys.argv[2])
with ThreadPoolExecutor(workers) as pool:
    for result in pool.map(lambda _: subprocess.run(["true"]), range(n)):
        if result.returncode != 0:
            sys.exit(1)
"""

PROFILE = """
import cProfile, pstats, sys
from ork_core.cli import main
sys.argv = ["ork", "run", "-q", "--concurrency", sys.argv[2], sys.argv[1]]
profiler = cProfile.Profile()
profiler.enable()
try:
    main()
except SystemExit:
    pass
profiler.disable()
stats = pstats.Stats(profiler, stream=sys.stderr)
stats.sort_stats("tottime").print_stats(25)
stats.sort_stats("cumulative").print_stats(40)
"""


IMPORTS = "import ork_core.cli, ork_core.scheduler, ork_core.workflow, ork_core.storage.sqlite, ork_executor_process.executor"
PYDANTIC = "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int = 0\nM(x=1)"


def write_project(folder: Path, tasks: int, name: str = "bench.yaml") -> Path:
    (folder / "ork.yaml").write_text("max_concurrency: 64\n")
    lines = ["name: bench_true", "tasks:"]
    lines += [f"  t{i:05d}: {{executor: process, command: [\"true\"]}}" for i in range(tasks)]
    workflow = folder / name
    workflow.write_text("\n".join(lines) + "\n")
    return workflow


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed with code {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="also profile one ork run with cProfile")
    parser.add_argument("--no-bytecode-cache", action="store_true", help="keep PYTHONDONTWRITEBYTECODE")
    parser.add_argument(
        "--from-elsewhere", action="store_true",
        help="run ork from the workflow folder's parent, so tasks do not share ork's cwd (they start through Popen)",
    )
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    if not args.no_bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)

    folder = Path(tempfile.mkdtemp(prefix="ork-bench-process-"))
    try:
        workflow = write_project(folder, args.tasks)
        single = write_project(folder, 1, "one.yaml")
        python = sys.executable
        baseline_argv = [python, "-c", BASELINE, str(args.tasks), str(args.concurrency)]
        ork_argv = [python, "-m", "ork_core", "run", "-q", "--concurrency", str(args.concurrency), str(workflow)]
        sides = {
            "base": baseline_argv,
            "ork": ork_argv,
            "base1": [python, "-c", BASELINE, "1", str(args.concurrency)],
            "ork1": [*ork_argv[:-1], str(single)],
            "imports": [python, "-c", IMPORTS],
            "pydantic": [python, "-c", PYDANTIC],
            "bare": [python, "-c", "pass"],
        }
        # one warm-up of each (file cache, bytecode cache, lazily created folders), not counted
        where = {side: folder.parent if args.from_elsewhere and side.startswith("ork") else folder for side in sides}
        for side, argv in sides.items():
            timed(argv, where[side], env)
        times: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.runs):
            for side, argv in sides.items():
                shutil.rmtree(folder / ".ork", ignore_errors=True)
                times[side].append(timed(argv, where[side], env))
        base, ork = times["base"], times["ork"]
        med = {side: statistics.median(values) for side, values in times.items()}
        b, o = med["base"], med["ork"]
        print(f"{args.tasks} tasks running `true`, concurrency {args.concurrency}, {args.runs} runs each (whole processes)"
              + ("; ork run from another folder than the workflow's" if args.from_elsewhere else ""))
        cache = "off (PYTHONDONTWRITEBYTECODE)" if "PYTHONDONTWRITEBYTECODE" in env else "on"
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, "
              f"bytecode cache {cache}")
        print(f"baseline (subprocess.run, 2-worker pool): median {b:.3f}s  runs {' '.join(f'{x:.3f}' for x in base)}")
        print(f"ork run (process executor):               median {o:.3f}s  runs {' '.join(f'{x:.3f}' for x in ork)}")
        print(f"ratio ork / baseline: {o / b:.2f}x  (target <= 1.30x); ork per task {o / args.tasks * 1000:.2f} ms")
        per_b = (b - med["base1"]) / (args.tasks - 1) * 1000
        per_o = (o - med["ork1"]) / (args.tasks - 1) * 1000
        print(f"fixed cost (1 task):  baseline {med['base1']:.3f}s  ork {med['ork1']:.3f}s; importing ork's modules "
              f"{med['imports'] - med['bare']:.3f}s, of which pydantic and a first model "
              f"{med['pydantic'] - med['bare']:.3f}s (bare interpreter {med['bare']:.3f}s)")
        print(f"per task:             baseline {per_b:.3f} ms  ork {per_o:.3f} ms  ratio {per_o / per_b:.2f}x")
        if args.profile:
            shutil.rmtree(folder / ".ork", ignore_errors=True)
            subprocess.run([python, "-c", PROFILE, str(workflow), str(args.concurrency)], cwd=folder, env=env,
                           stdout=subprocess.DEVNULL, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
