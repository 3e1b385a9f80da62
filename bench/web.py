"""`ork serve` on a run of 2,000 tasks: the API's run endpoint, and the run page in Chromium.

Makes a project whose workflow is 1 → 1,998 → 1 no-op python tasks, runs it with the real
``ork run``, starts the real ``ork serve`` as a child process on 127.0.0.1, then measures:

- ``GET /api/v1/runs/{id}``: the whole run (2,000 tasks with outputs, errors, attempts and
  dependencies), whole and with ``?excerpt=2000``, wall time seen by an httpx client;
- ``GET /runs/{id}``: the server's time for the run page's HTML (SVG graph, timeline, table);
- the run page in headless Chromium (Debian's, through Playwright): from navigation start to
  every one of the 2,000 graph nodes in the DOM and the load event fired.

Targets (issue #14): page ≤ 2 s, API ≤ 200 ms. Prints medians (and min–max) of `--runs` tries.

    .venv/bin/python bench/web.py
    .venv/bin/python bench/web.py --runs 9 --tasks 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TOKEN = "bench-token"


def make_project(folder: Path, tasks: int) -> None:
    (folder / "ork.yaml").write_text("executors:\n  python:\n    type: python\n")
    (folder / "tasks.py").write_text("def noop() -> dict:\n    return {'ok': True}\n")
    middle = [f"t{i:04d}" for i in range(tasks - 2)]
    lines = ["name: big", "tasks:", "  start: {file: tasks.py, function: noop}"]
    lines += [f"  {name}: {{file: tasks.py, function: noop, depends_on: [start]}}" for name in middle]
    lines.append(f"  end: {{file: tasks.py, function: noop, depends_on: [{', '.join(middle)}]}}")
    (folder / "big.yaml").write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "ORK_DISABLE_PLUGINS": "1", "ORK_API_TOKEN": TOKEN}
    env.pop("ORK_DB", None)
    folder = Path(tempfile.mkdtemp(prefix="ork-bench-web-"))
    server = None
    try:
        make_project(folder, args.tasks)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "ork_core", "run", "big.yaml", "--quiet"], cwd=folder, env=env,
                              capture_output=True, text=True, check=True)
        run_id = done.stdout.split()[1]
        print(f"{args.tasks} tasks run by ork run in {time.monotonic() - started:.1f}s: run {run_id}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "ork_core", "serve", "--port", str(port)], cwd=folder, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with httpx.Client(base_url=url, timeout=60) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/api/v1/runs")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("ork serve did not start") from None
                    time.sleep(0.1)
            for label, path in (
                ("API GET /api/v1/runs/{id}", f"/api/v1/runs/{run_id}"),
                ("API GET /api/v1/runs/{id}?excerpt=2000", f"/api/v1/runs/{run_id}?excerpt=2000"),
                ("page HTML GET /runs/{id} (server)", f"/runs/{run_id}"),
            ):
                client.get(path).raise_for_status()  # warm: the workflow snapshot and its layout are cached
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    times.append(time.perf_counter() - t0)
                    response.raise_for_status()
                print(f"{label}: {summary(times)}, {len(response.content) / 1e6:.2f} MB")
        print(f"run page in Chromium: {browser_times(url, run_id, args.tasks, args.runs)}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        shutil.rmtree(folder, ignore_errors=True)


def browser_times(url: str, run_id: str, tasks: int, runs: int) -> str:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "skipped: chromium is not installed (apt-get install chromium)"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        try:
            for attempt in range(runs + 1):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(f"{url}/runs/{run_id}", wait_until="load")
                page.wait_for_function(f"document.querySelectorAll('#dag g.node').length === {tasks}")
                elapsed = time.perf_counter() - t0
                if attempt:  # the first is Chromium warming up
                    times.append(elapsed)
                context.close()
        finally:
            browser.close()
    return summary(times)


if __name__ == "__main__":
    main()
