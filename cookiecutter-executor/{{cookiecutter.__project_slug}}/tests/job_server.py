"""A stand-in for {{ cookiecutter.__class_prefix }}'s job API on 127.0.0.1, speaking the API client.py expects.

A job runs for ``params.seconds`` (default 0.1) and then succeeds with its params echoed
back, or fails if ``params.fail`` is set. `submissions` counts every POST /jobs, which is
how the conformance kit proves a resumed run adopted its job instead of submitting again.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JobServer:
    """Use as a context manager: the server runs on a free port until the block ends."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submissions = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> JobServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="job-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def view(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job as the API returns it, its state computed from the clock."""
        state = job["state"]
        if state == "running" and time.time() >= job["due"]:
            state = "failed" if job["params"].get("fail") else "succeeded"
            job["state"] = state
        return {
            "id": job["id"],
            "job": job["job"],
            "state": state,
            "result": {"job": job["job"], "params": job["params"]} if state == "succeeded" else None,
            "error": f"job {job['id']} failed" if state == "failed" else None,
        }

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.submissions += 1
            job_id = uuid.uuid4().hex[:12]
            seconds = float(body.get("params", {}).get("seconds", 0.1))
            self.jobs[job_id] = {
                "id": job_id, "job": body["job"], "params": body.get("params", {}), "state": "running",
                "due": time.time() + seconds, "idempotency_key": body.get("idempotency_key"),
            }
            return self.view(self.jobs[job_id])


def _handler(server: JobServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            data: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return data

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/jobs":
                key = urllib.parse.parse_qs(url.query).get("idempotency_key", [None])[0]
                with server._lock:
                    found = [server.view(j) for j in server.jobs.values() if j["idempotency_key"] == key]
                self._send(200, found)
                return
            match = re.fullmatch(r"/jobs/(\w+)", url.path)
            with server._lock:
                job = server.jobs.get(match.group(1)) if match else None
                body = server.view(job) if job else None
            self._send(200, body) if body else self._send(404, {"error": "no such job"})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/jobs":
                self._send(201, server.submit(body))
                return
            match = re.fullmatch(r"/jobs/(\w+)/cancel", self.path)
            with server._lock:
                job = server.jobs.get(match.group(1)) if match else None
                if job is not None and server.view(job)["state"] == "running":
                    job["state"] = "cancelled"
                found = server.view(job) if job else None
            self._send(200, found) if found else self._send(404, {"error": "no such job"})

    return Handler
