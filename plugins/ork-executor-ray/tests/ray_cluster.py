"""A throwaway Ray head node on 127.0.0.1 for the tests and the benchmark.

It is started with ``ray start --head --block`` in a session of its own, with every port
chosen free and a private ``--temp-dir``, and it is stopped by its own process ids: the
processes whose command line names that temporary folder (gcs_server, raylet, dashboard,
workers …). ``ray stop`` is never used, because it ends every Ray process of the machine,
including clusters that belong to someone else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

QUIET_ENV: Mapping[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_event_stats": "0",
    "RAY_gcs_server_request_timeout_seconds": "30",
}
"""Environment for Ray: no usage statistics, no prompts, nothing looked up on the network."""


WORKER_PORTS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pids_using(folder: str) -> list[int]:
    """Processes whose command line names `folder`: the cluster's own, and only them."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if folder in cmdline:
            found.append(int(entry))
    return found


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (a job's driver names no Ray folder, its parent does)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found = set(roots)
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class RayCluster:
    """One head node; `address` for ``ray.init``, `dashboard_url` for the Job Submission API."""

    num_cpus: int = 4
    temp_dir: str = ""
    port: int = 0
    dashboard_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    pids_seen: set[int] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token_path(self) -> str:
        return str(Path(self.temp_dir) / "auth_token")

    def auth_env(self) -> dict[str, str]:
        """Token authentication (Ray's default for new clusters) with a token of this cluster alone.

        Without it Ray would read, or write, ``~/.ray/auth_token``: a file outside the test
        shared with every other cluster of the user. Clients (``ray.init``, the Job
        Submission client, ``ork``) find the token through the same variables.
        """
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}

    def env(self) -> dict[str, str]:
        env = {**os.environ, **QUIET_ENV, **self.auth_env()}
        env.pop("RAY_ADDRESS", None)
        env.pop("RAY_AUTH_TOKEN", None)
        return env

    def start(self, timeout: float = 90.0) -> RayCluster:
        # short: Ray's socket paths live under it and a Unix socket path has at most 107 bytes
        self.temp_dir = tempfile.mkdtemp(prefix="orkray-", dir="/tmp")
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        # a worker port range that is free now, and every other port distinct and outside it
        low = free_port()
        while low + WORKER_PORTS >= 65535:
            low = free_port()
        taken = set(range(low, low + WORKER_PORTS + 1))

        def port() -> int:
            while True:
                chosen = free_port()
                if chosen not in taken:
                    taken.add(chosen)
                    return chosen

        self.port, self.dashboard_port = port(), port()
        ray = str(Path(sys.executable).with_name("ray"))
        command = [
            ray, "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={port()}", f"--dashboard-agent-grpc-port={port()}",
            f"--metrics-export-port={port()}", f"--runtime-env-agent-port={port()}",
            f"--ray-client-server-port={port()}", f"--node-manager-port={port()}",
            f"--object-manager-port={port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + WORKER_PORTS}",
        ]
        log = open(Path(self.temp_dir) / "ray-start.log", "wb")
        self.process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                text = (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{text[-3000:]}")
            token = Path(self.token_path).read_text().strip()
            request = urllib.request.Request(f"{self.dashboard_url}/api/version", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as reply:
                    if reply.status == 200:
                        self.pids_seen.update(self.ours())
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        logs = sorted(Path(self.temp_dir).glob("session_*/logs/dashboard.*")) + [Path(self.temp_dir) / "ray-start.log"]
        text = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs if p.is_file())
        self.stop()
        raise RuntimeError(f"the Ray head on {self.address} did not answer within {timeout:g}s\n{text}")

    def ours(self) -> set[int]:
        return descendants(set(pids_using(self.temp_dir)) | self.pids_seen)

    def stop(self, grace: float = 3.0) -> list[int]:
        """End this cluster's processes; returns the pids still alive after that (should be none).

        SIGTERM first; whatever still runs after `grace` seconds gets SIGKILL (``ray start
        --block`` takes its time to go down on its own, and a killed raylet's workers end).
        """
        if not self.temp_dir:
            return []
        pids = self.ours()
        if self.process is not None:
            pids.add(self.process.pid)
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + grace
        while time.monotonic() < end:
            pids |= self.ours()
            if not any(alive(p) for p in pids):
                break
            time.sleep(0.2)
        for pid in pids | self.ours():
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.5)
        left = sorted(p for p in pids | self.ours() if alive(p))
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
