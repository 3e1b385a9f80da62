"""Deferred-job tracking cost: thousands of `http_async` jobs polled from one ork process.

A job API runs in its own process on 127.0.0.1 (so its CPU is not counted): kickoff answers
202 with a job id, status answers "running" until the bench tells it to finish. Each
measured run is a fresh process that executes one workflow of N `http_async` tasks in
process, waits until every job is deferred and one full poll cycle has passed, then
measures CPU time (user + system, all threads) over C poll cycles counted by the server
(a cycle = N status requests), lets the jobs finish, and reports its peak RSS.

    python bench/deferred.py                  # 5,000 jobs, 10 s interval, 3 cycles, 5 runs
    python bench/deferred.py --core-only      # the same through an in-memory tracker: ork's own share
    python bench/deferred.py --jobs 1000 --runs 3

The process is CPU-bound when one cycle's CPU time exceeds the interval; then a cycle
takes as long as its CPU time and jobs are polled less often than asked.

Needs ork-executor-http installed (pip install -e plugins/ork-executor-http).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ork import Context, Deferred, JobStatus, executor, hookimpl

COUNTERS = struct.Struct("qq")  # kickoffs, status polls

# --- the job API (runs in its own process) ------------------------------------------------------


def serve(port_file: Path, counters_file: Path) -> None:
    counters_file.write_bytes(b"\0" * COUNTERS.size)
    with open(counters_file, "r+b") as fh:
        shared = mmap.mmap(fh.fileno(), COUNTERS.size)
    state = {"kickoffs": 0, "polls": 0, "finished": False, "next": 0}
    reasons = {200: b"OK", 202: b"Accepted", 404: b"Not Found"}

    def route(method: str, path: str) -> tuple[int, Any]:
        if method == "POST" and path == "/jobs":
            state["kickoffs"] += 1
            state["next"] += 1
            return 202, {"run": {"id": f"j{state['next']}"}}
        if method == "GET" and path.startswith("/jobs/"):
            state["polls"] += 1
            if state["finished"]:
                return 200, {"state": "done", "result": {"id": path[6:]}}
            return 200, {"state": "running"}
        if method == "POST" and path == "/finish":
            state["finished"] = True
            return 200, {}
        if method == "POST" and path == "/reset":
            state.update(kickoffs=0, polls=0, finished=False, next=0)
            return 200, {}
        return 404, {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b""):
                        break
                    if header[:15].lower() == b"content-length:":
                        length = int(header[15:])
                if length:
                    await reader.readexactly(length)
                status, payload = route(method, path)
                COUNTERS.pack_into(shared, 0, state["kickoffs"], state["polls"])
                data = json.dumps(payload).encode()
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, reasons[status], len(data), data)
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- ork's own share: an in-memory tracker, no HTTP ------------------------------------------------


class _Box:
    """The in-memory "job API" of --core-only: counts kickoffs and polls like the server does."""

    kickoffs = 0
    polls = 0
    finished = False


class NullConfig(BaseModel):
    pass


@executor
class NullExecutor:
    def __init__(self, config: NullConfig) -> None:
        pass

    async def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Deferred:
        _Box.kickoffs += 1
        return Deferred("bench_null", {"id": ctx.task_name}, external_id=ctx.task_name)


class NullTracker:
    poll_interval = 1.0

    def __init__(self, executor: object) -> None:
        pass

    async def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus]:
        _Box.polls += len(handles)
        status = JobStatus.succeeded({"ok": True}) if _Box.finished else JobStatus.running()
        return [status] * len(handles)


class NullPlugin:
    @hookimpl
    def ork_register_executors(self, register: Any) -> None:
        register("bench_null", NullExecutor)

    @hookimpl
    def ork_register_job_trackers(self, register: Any) -> None:
        register("bench_null", NullTracker)


# --- one measured run (a fresh process each time) ------------------------------------------------


def measure(
    url: str, counters_file: Path, jobs: int, interval: float, cycles: int, concurrency: int, core_only: bool
) -> dict[str, Any]:
    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.scheduler import Scheduler, create_run, execute
    from ork_core.storage import open_storage, storage_url
    from ork_core.workflow import load_workflow

    folder = Path(tempfile.mkdtemp(prefix="ork-bench-deferred-"))
    if core_only:
        plugins = build_plugin_manager({}, plugins=[NullPlugin()], entry_points=False)
        task = "    executor: bench_null\n"

        def counters() -> tuple[int, int]:
            return _Box.kickoffs, _Box.polls

        def finish() -> None:
            _Box.finished = True

    else:
        with open(counters_file, "r+b") as fh:
            shared = mmap.mmap(fh.fileno(), COUNTERS.size, access=mmap.ACCESS_READ)
        plugins = build_plugin_manager({"ORK_PLUGINS": "http"})
        (folder / "ork.yaml").write_text(
            f"executors:\n  jobs:\n    type: http_async\n    config:\n      base_url: {url}\n"
            "      headers: {Authorization: Bearer bench}\n"
        )
        task = (
            "    executor: jobs\n    url: /jobs\n    body: {}\n    run_id_path: run.id\n"
            "    status_url: '/jobs/{{ run_id }}'\n    status_path: state\n    success_states: [done]\n"
            f"    output_path: result\n    poll_interval: {interval}\n"
        )

        def counters() -> tuple[int, int]:
            return COUNTERS.unpack_from(shared, 0)  # type: ignore[return-value]

        def finish() -> None:
            urllib.request.urlopen(urllib.request.Request(f"{url}/finish", method="POST", data=b"")).read()

    (folder / "wf.yaml").write_text("name: deferred_bench\ntasks:\n" + "".join(f"  t{i}:\n{task}" for i in range(jobs)))
    project = Project.load(folder, plugins)
    workflow = load_workflow(folder / "wf.yaml", project)
    storage = open_storage(storage_url(None, folder, None, env={}), plugins.registry)
    run_id = create_run(storage, workflow, {})
    scheduler = Scheduler(
        project=project, plugins=plugins, storage=storage, workflow=workflow, run_id=run_id, params={},
        max_concurrency=concurrency, poll_interval=interval if core_only else None,
    )
    marks: dict[str, Any] = {}

    def control() -> None:
        started = time.perf_counter()
        while counters()[0] < jobs:
            time.sleep(0.01)
        marks["kickoff_s"] = time.perf_counter() - started
        base = counters()[1]
        while counters()[1] < base + jobs:  # let one whole cycle pass after the last kickoff
            time.sleep(0.005)
        cpu0, polls0, t0 = time.process_time(), counters()[1], time.perf_counter()
        while counters()[1] < polls0 + cycles * jobs:
            time.sleep(0.005)
        cpu1, polls1, t1 = time.process_time(), counters()[1], time.perf_counter()
        measured = (polls1 - polls0) / jobs
        marks.update(cpu_per_cycle=(cpu1 - cpu0) / measured, wall_per_cycle=(t1 - t0) / measured, cycles=measured)
        finish()

    thread = threading.Thread(target=control, daemon=True)
    thread.start()
    result = execute(scheduler, handle_signals=False)
    thread.join()
    storage.close()
    if result.status != "success":
        raise SystemExit(f"bench run ended {result.status}")
    marks["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    marks["threads"] = threading.active_count()
    return marks


# --- the driver ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=10.0, help="poll interval of every job (s)")
    parser.add_argument("--cycles", type=int, default=3, help="poll cycles measured per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64, help="tasks kicking off at once")
    parser.add_argument(
        "--core-only", action="store_true",
        help="an in-memory tracker instead of http_async: the cost of ork's triggerer, scheduler and storage alone",
    )
    parser.add_argument("--serve", nargs=2, metavar=("PORT_FILE", "COUNTERS_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("URL", "COUNTERS_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]))
        return
    if args.measure:
        marks = measure(
            args.measure[0], Path(args.measure[1]), args.jobs, args.interval, args.cycles, args.concurrency, args.core_only
        )
        print(json.dumps(marks))
        return

    work = Path(tempfile.mkdtemp(prefix="ork-bench-server-"))
    port_file, counters_file = work / "port", work / "counters"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file), str(counters_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            if server.poll() is not None:
                raise SystemExit("the job server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        what = "in-memory (--core-only)" if args.core_only else "http_async"
        print(
            f"{args.jobs} deferred {what} jobs, poll interval {args.interval:g}s, {args.cycles} cycles measured "
            f"per run, {args.runs} runs (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
        )
        rows = []
        for n in range(args.runs):
            urllib.request.urlopen(urllib.request.Request(f"{url}/reset", method="POST", data=b"")).read()
            child = subprocess.run(
                [sys.executable, __file__, "--measure", url, str(counters_file), "--jobs", str(args.jobs),
                 "--interval", str(args.interval), "--cycles", str(args.cycles), "--concurrency", str(args.concurrency),
                 *(["--core-only"] if args.core_only else [])],
                capture_output=True, text=True, check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"run {n + 1} failed:\n{child.stderr}")
            row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"  run {n + 1}: CPU {row['cpu_per_cycle']:.3f} s/cycle, wall {row['wall_per_cycle']:.2f} s/cycle, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB, kickoff of all jobs {row['kickoff_s']:.1f} s, threads {row['threads']}"
            )
        cpu = statistics.median(r["cpu_per_cycle"] for r in rows)
        print(
            f"median: CPU {cpu:.3f} s per poll cycle ({cpu / args.jobs * 1e6:.0f} µs per job poll), "
            f"wall {statistics.median(r['wall_per_cycle'] for r in rows):.2f} s per cycle, "
            f"peak RSS {statistics.median(r['peak_rss_mb'] for r in rows):.0f} MB"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
