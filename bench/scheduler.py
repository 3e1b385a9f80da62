"""`ork scheduler` under a tick storm: N workflows on ``* * * * *``, one no-op task each.

One real `ork scheduler` process serves them for a few minutes on the embedded SQLite
default. Afterwards the database says, for every tick that fell while it ran:

- how many runs it got (must be N),
- the delay from the tick's due time to its run being committed (``created_at``), and to its
  task having succeeded (``finished_at``), as median and p99 over all runs,

and /proc says the scheduler's CPU seconds per minute (all of it, and in the quiet part of
each minute, from 20 s after a tick to 5 s before the next, when nothing is due) and its
peak RSS. The baseline for the idle figure is a bare asyncio loop that wakes once a second
(as the scheduler does, to see `ork trigger` and the like), measured the same way first:
on a VM, /proc charges such wake-ups more than they cost.

    python bench/scheduler.py                     # 200 workflows, 3 minutes
    python bench/scheduler.py --workflows 50 --minutes 2
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


IDLE_LOOP = """
import asyncio
async def main():
    event = asyncio.Event()
    while True:
        try:
            await asyncio.wait_for(event.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
asyncio.run(main())
"""


def idle_loop_cpu(seconds: float) -> float:
    """% of one core a bare asyncio loop waking once a second shows in /proc on this machine: the floor."""
    proc = subprocess.Popen([sys.executable, "-c", IDLE_LOOP])
    try:
        time.sleep(2)
        c0, w0 = cpu_seconds(proc.pid), time.time()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - c0) / (time.time() - w0) * 100
    finally:
        proc.kill()
        proc.wait()


def make_project(folder: Path, n: int) -> None:
    (folder / "ork.yaml").write_text("workflows: ['flows/*.yaml']\nmax_concurrency: 64\n")
    flows = folder / "flows"
    flows.mkdir()
    (flows / "tasks.py").write_text("def noop() -> int:\n    return 1\n")
    for i in range(n):
        (flows / f"w{i:03d}.yaml").write_text(
            f"name: w{i:03d}\nschedule:\n  cron: '* * * * *'\n  catchup: false\n"
            "tasks:\n  noop: {file: tasks.py, function: noop}\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--log", type=Path, help="Keep the scheduler's log here.")
    args = parser.parse_args()

    floor = idle_loop_cpu(30)
    with tempfile.TemporaryDirectory(prefix="ork-bench-scheduler-") as tmp:
        folder = Path(tmp)
        make_project(folder, args.workflows)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
        env["ORK_DISABLE_PLUGINS"] = "1"
        log = (folder / "scheduler.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "ork_core", "scheduler"], cwd=folder, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        started = time.time()
        first_tick = (int(started) // 60 + 1) * 60
        samples: list[tuple[float, float]] = []  # (wall, cpu seconds)
        try:
            end = started + args.minutes * 60
            while time.time() < end and proc.poll() is None:
                samples.append((time.time(), cpu_seconds(proc.pid)))
                time.sleep(0.5)
            rss = peak_rss_mb(proc.pid)
            cpu_total = cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            log.close()
        wall = time.time() - started
        if args.log:
            args.log.write_text((folder / "scheduler.log").read_text())
        db = sqlite3.connect(folder / ".ork" / "ork.db")
        runs = db.execute(
            "SELECT r.logical_ts, r.created_at, t.finished_at FROM runs r JOIN tasks t ON t.run_id = r.id"
            " WHERE r.triggered_by = 'schedule' AND r.logical_ts >= ?", (first_tick,)
        ).fetchall()
        per_tick: dict[int, int] = {}
        for ts, _, _ in runs:
            per_tick[ts] = per_tick.get(ts, 0) + 1
        committed = [created - ts for ts, created, _ in runs]
        succeeded = [done - ts for ts, _, done in runs if done is not None]
        quiet_cpu = quiet_wall = 0.0
        for (w0, c0), (w1, c1) in zip(samples, samples[1:]):
            if 20 <= w0 % 60 and (w1 % 60) <= 55 and w1 - w0 < 5 and int(w0 // 60) == int(w1 // 60):
                quiet_cpu += c1 - c0
                quiet_wall += w1 - w0
        print(f"workflows {args.workflows}, scheduler ran {wall:.0f} s, ticks measured {len(per_tick)}")
        print(f"runs per tick: {sorted(set(per_tick.values()))} (every tick must have {args.workflows})")
        if committed:
            print(f"tick -> run committed: median {statistics.median(committed) * 1000:.0f} ms, "
                  f"p99 {percentile(committed, 0.99) * 1000:.0f} ms, max {max(committed) * 1000:.0f} ms")
        if succeeded:
            print(f"tick -> task succeeded: median {statistics.median(succeeded) * 1000:.0f} ms, "
                  f"p99 {percentile(succeeded, 0.99) * 1000:.0f} ms")
        idle = quiet_cpu / quiet_wall * 100 if quiet_wall else float("nan")
        print(f"CPU: {cpu_total / wall * 60:.2f} s per minute overall; idle between ticks {idle:.2f} % of one core "
              f"({quiet_cpu:.2f} s of CPU in {quiet_wall:.0f} s with nothing due); "
              f"a bare asyncio loop waking once a second: {floor:.2f} %")
        print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
