"""A small job API on 127.0.0.1 that the tests start and stop, and that counts what it is asked.

Routes:
  ANY  /echo…            200, the request as JSON (method, path, query, headers, json)
  ANY  /reflect…         500, every request header (Authorization too) in the JSON error body,
                         as services that echo the request in their errors do
  GET  /status/<code>    that status, with a JSON error body
  GET  /slow/<seconds>   200 after a pause (for timeouts)
  GET  /text             200, a plain-text body
  POST /jobs             kickoff: 202 {"run": {"id": …}}; the same Idempotency-Key gives the same job.
                         The JSON body picks the job's behaviour: {"polls": n (running answers
                         before the end), "outcome": "succeed"|"fail"|"forever", "errors": k (first
                         k status requests answer 500), "delay": s (pause before answering a
                         new job's kickoff)}
  GET  /jobs/<id>        {"state": "running"|"done"|"error"|"cancelled", …}
  DELETE /jobs/<id>      cancels it (204), 404 if unknown
  GET  /jobs?key=<key>   the job started with that Idempotency-Key, or 404
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Job:
    id: str
    key: str | None
    spec: dict[str, Any]
    status_requests: int = 0
    cancelled: bool = False


@dataclass
class Recorder:
    """Everything the server saw; read by tests, written by handler threads under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    kickoffs: int = 0
    kickoffs_by_key: Counter[str] = field(default_factory=Counter)
    jobs: dict[str, Job] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def count(self, route: str) -> int:
        with self.lock:
            return self.requests[route]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _handle(self) -> None:
        rec = self.server.recorder
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        body = self._body()
        route = f"{self.command} /{parts[0] if parts else ''}"
        with rec.lock:
            rec.requests[route] += 1
            rec.headers.append({k.lower(): v for k, v in self.headers.items()})
        if parts[:1] == ["echo"]:
            query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(url.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
            self._reply(200, {"method": self.command, "path": url.path, "query": query, "headers": headers, "json": body})
        elif parts[:1] == ["reflect"]:
            headers = sorted(self.headers.items(), key=lambda kv: kv[0].lower() != "authorization")  # credentials first
            self._reply(500, {"error": "internal error", "request": {"path": url.path, "headers": dict(headers)}})
        elif parts[:1] == ["status"] and len(parts) == 2:
            self._reply(int(parts[1]), {"error": f"you asked for {parts[1]}"})
        elif parts[:1] == ["slow"] and len(parts) == 2:
            self.server.stopping.wait(float(parts[1]))
            self._reply(200, {"ok": True})
        elif parts[:1] == ["text"]:
            self._reply(200, b"hello, not json", "text/plain")
        elif parts[:1] == ["jobs"]:
            self._jobs(parts[1:], parse_qs(url.query), body)
        else:
            self._reply(404, {"error": "no such route"})

    def _jobs(self, rest: list[str], query: dict[str, list[str]], body: Any) -> None:
        rec = self.server.recorder
        if self.command == "POST" and not rest:
            spec = body if isinstance(body, dict) else {}
            key = self.headers.get("Idempotency-Key")
            with rec.lock:
                rec.kickoffs += 1
                rec.kickoffs_by_key[key or ""] += 1
                job_id = rec.by_key.get(key) if key else None
                created = job_id is None
                if job_id is None:
                    job_id = f"r{len(rec.jobs) + 1}"
                    rec.jobs[job_id] = Job(job_id, key, spec)
                    if key:
                        rec.by_key[key] = job_id
            if created and spec.get("delay"):
                self.server.stopping.wait(float(spec["delay"]))
            self._reply(202, {"run": {"id": job_id}, "accepted": True})
        elif self.command == "GET" and not rest:
            key = (query.get("key") or [""])[0]
            with rec.lock:
                job_id = rec.by_key.get(key)
            self._reply(200, {"run": {"id": job_id}}) if job_id else self._reply(404, {"error": "no job"})
        elif len(rest) == 1 and self.command in ("GET", "DELETE"):
            with rec.lock:
                job = rec.jobs.get(rest[0])
                if job is not None and self.command == "GET":
                    job.status_requests += 1
                if job is not None and self.command == "DELETE":
                    job.cancelled = True
                    rec.cancels.append(job.id)
            if job is None:
                self._reply(404, {"error": f"no job {rest[0]}"})
            elif self.command == "DELETE":
                self._reply(204)
            else:
                status, answer = self._state(job)
                self._reply(status, answer)
        else:
            self._reply(405, {"error": "method not allowed"})

    @staticmethod
    def _state(job: Job) -> tuple[int, dict[str, Any]]:
        spec = job.spec
        errors = int(spec.get("errors", 0))
        if job.cancelled:
            return 200, {"id": job.id, "state": "cancelled"}
        if job.status_requests <= errors:
            return 500, {"error": "status backend unavailable"}
        answered = job.status_requests - errors
        outcome = spec.get("outcome", "succeed")
        if outcome == "forever" or answered <= int(spec.get("polls", 0)):
            return 200, {"id": job.id, "state": "running", "progress": answered}
        if outcome == "fail":
            return 200, {"id": job.id, "state": "error", "detail": {"message": "disk full"}}
        return 200, {"id": job.id, "state": "done", "result": {"rows": 42, "job": job.id}}

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: Recorder
    stopping: threading.Event


class JobServer:
    """Start with `with JobServer() as server:`; `server.url` is its base URL."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.recorder = Recorder()
        self._server.stopping = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def recorder(self) -> Recorder:
        return self._server.recorder

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> JobServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def wait_until(condition: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
