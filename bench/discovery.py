"""How long `ork executors --json` takes with 100 installed plugin distributions, and without.

Each fake distribution is a real `*.dist-info` with an `ork` entry point and a small
registration module whose executor module imports something heavy on purpose (it must
never be imported by listing). Both runs are whole processes; medians of --runs.

    python bench/discovery.py            # 100 plugins, 15 runs
    python bench/discovery.py --plugins 300 --runs 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REGISTRATION = '''
from ork import hookimpl

ORK_PLUGIN_API = ">=1,<2"

@hookimpl
def ork_register_executors(register):
    register("{name}", "{module}.executor:Executor")
'''

EXECUTOR = '''
import time
time.sleep(1)  # listing must never import this module
'''


def make_plugins(site: Path, count: int) -> None:
    for i in range(count):
        name, module = f"bench{i}", f"ork_executor_bench{i}"
        info = site / f"{module}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ork-executor-bench{i}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[ork]\n{name} = {module}.plugin\n")
        pkg = site / module
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "plugin.py").write_text(REGISTRATION.format(name=name, module=module))
        (pkg / "executor.py").write_text(EXECUTOR)


def time_listing(cwd: Path, env: dict[str, str], runs: int) -> tuple[float, int]:
    walls: list[float] = []
    listed = 0
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "ork_core", "executors", "--json"], cwd=cwd, env=env, check=True,
            capture_output=True, text=True,
        ).stdout
        walls.append(time.perf_counter() - start)
        listed = len(json.loads(out))
    return statistics.median(walls), listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ork-discovery-") as tmp:
        root = Path(tmp)
        site, empty, work = root / "site", root / "empty", root / "work"
        for folder in (site, empty, work):
            folder.mkdir()
        make_plugins(site, args.plugins)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
        without, n0 = time_listing(work, {**base_env, "PYTHONPATH": str(empty)}, args.runs)
        with_, n1 = time_listing(work, {**base_env, "PYTHONPATH": str(site)}, args.runs)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, median of {args.runs} runs of `ork executors --json`")
        print(f"without the fake plugins: {without * 1000:7.1f} ms  ({n0} executors listed)")
        print(f"with {args.plugins} plugins:        {with_ * 1000:7.1f} ms  ({n1} executors listed)")
        print(f"cost per plugin distribution: {(with_ - without) / args.plugins * 1000:.2f} ms; ratio {with_ / without:.2f}x")


if __name__ == "__main__":
    main()
