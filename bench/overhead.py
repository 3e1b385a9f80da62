"""Scheduler overhead: `ork run` on generated no-op workflows against calling the functions directly.

W1 "wide": 1 root -> N independent tasks -> 1 join that receives all N outputs.
W2 "chain": N tasks, each passing a small value to the next.

Both sides run as whole processes (interpreter start and imports included). ork commits
every state change to SQLite. Reports, per shape and N: median wall time, the marginal
cost per task ((wall(N) - wall(small)) / (N - small)) and peak RSS of the process.

    python bench/overhead.py                 # N = 500 and 10,000, 5 runs each
    python bench/overhead.py --sizes 500 --runs 3
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

TASKS_PY = '''
def root() -> int:
    return 1

def work(x: int) -> int:
    return x + 1

def join(upstream) -> int:
    return len(upstream)
'''

BASELINE_PY = '''
import sys, json
sys.path.insert(0, sys.argv[3])
import tasks
shape, n = sys.argv[1], int(sys.argv[2])
if shape == "wide":
    r = tasks.root()
    outs = {f"t{i}": tasks.work(r) for i in range(n)}
    print(tasks.join(outs))
else:
    v = tasks.root()
    for i in range(n):
        v = tasks.work(v)
    print(v)
'''


def write_workflow(folder: Path, shape: str, n: int) -> Path:
    lines = [f"name: {shape}_{n}", "tasks:", "  root:", "    module: tasks", "    function: root"]
    if shape == "wide":
        for i in range(n):
            lines += [f"  t{i}:", "    module: tasks", "    function: work", "    depends_on: [root]",
                      "    inputs: {x: {ref: tasks.root.output}}"]
        lines += ["  join:", "    module: tasks", "    function: join", "    depends_on: [" + ", ".join(f"t{i}" for i in range(n)) + "]"]
    else:
        prev = "root"
        for i in range(n):
            lines += [f"  t{i}:", "    module: tasks", "    function: work", f"    depends_on: [{prev}]",
                      f"    inputs: {{x: {{ref: tasks.{prev}.output}}}}"]
            prev = f"t{i}"
    path = folder / f"{shape}_{n}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ork(folder: Path, wf: Path, env: dict[str, str]) -> tuple[float, float]:
    db = folder / ".ork" / "ork.db"
    if db.parent.exists():
        shutil.rmtree(db.parent)
    ork = [sys.executable, "-m", "ork_core", "run", "--quiet", str(wf)]
    start = time.perf_counter()
    proc = subprocess.Popen(ork, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ork run failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def run_baseline(folder: Path, shape: str, n: int, env: dict[str, str]) -> tuple[float, float]:
    cmd = [sys.executable, str(folder / "baseline.py"), shape, str(n), str(folder)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("baseline failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 10_000])
    parser.add_argument("--small", type=int, default=10, help="the small N the marginal cost is measured from")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "ORK_DISABLE_PLUGINS": "1"}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.runs} runs per cell, medians")
    print(f"{'shape':6} {'N':>6} {'tasks':>6} {'ork wall s':>10} {'base wall s':>11} {'ork ms/task':>12} {'ork RSS MB':>10} {'base RSS MB':>11}")
    with tempfile.TemporaryDirectory(prefix="ork-bench-") as tmp:
        folder = Path(tmp)
        (folder / "tasks.py").write_text(TASKS_PY)
        (folder / "baseline.py").write_text(BASELINE_PY)
        (folder / "ork.yaml").write_text("max_concurrency: 4\n")
        for shape in ("wide", "chain"):
            small_wf = write_workflow(folder, shape, args.small)
            small = statistics.median(run_ork(folder, small_wf, env)[0] for _ in range(args.runs))
            for n in args.sizes:
                wf = write_workflow(folder, shape, n)
                ork_runs = [run_ork(folder, wf, env) for _ in range(args.runs)]
                base_runs = [run_baseline(folder, shape, n, env) for _ in range(args.runs)]
                ork_wall = statistics.median(w for w, _ in ork_runs)
                base_wall = statistics.median(w for w, _ in base_runs)
                marginal = (ork_wall - small) / (n - args.small) * 1000
                tasks = n + 2 if shape == "wide" else n + 1
                print(
                    f"{shape:6} {n:>6} {tasks:>6} {ork_wall:>10.3f} {base_wall:>11.3f} {marginal:>12.3f}"
                    f" {max(r for _, r in ork_runs):>10.1f} {max(r for _, r in base_runs):>11.1f}"
                )


if __name__ == "__main__":
    main()
