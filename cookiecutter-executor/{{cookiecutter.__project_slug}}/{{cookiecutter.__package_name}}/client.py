"""A small client for {{ cookiecutter.__class_prefix }}'s job API: submit, find by idempotency key, get, cancel.

It speaks JSON over HTTP with the standard library only, so the plugin installs wherever
ork does. It stands in for your system's SDK: replace it, and keep the four operations,
which are what the executor and the tracker need. The API it expects:

- ``POST /jobs`` with ``{"job", "params", "idempotency_key"}`` returns the new job;
- ``GET /jobs?idempotency_key=K`` returns the jobs submitted with that key;
- ``GET /jobs/<id>`` returns a job: ``{"id", "state", "result", "error"}`` where ``state`` is
  one of queued, running, succeeded, failed, cancelled;
- ``POST /jobs/<id>/cancel`` cancels it (cancelling a finished job does nothing).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class {{ cookiecutter.__class_prefix }}APIError(Exception):
    """An API call failed; the message says which call and why."""


class {{ cookiecutter.__class_prefix }}Client:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def job_url(self, job_id: str) -> str:
        return f"{self.url}/jobs/{urllib.parse.quote(job_id)}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise {{ cookiecutter.__class_prefix }}APIError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise {{ cookiecutter.__class_prefix }}APIError(f"{method} {self.url}{path}: {reason}") from None
        return json.loads(raw) if raw else None

    def submit(self, job: str, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        created: dict[str, Any] = self._call("POST", "/jobs", {"job": job, "params": params, "idempotency_key": idempotency_key})
        return created

    def find(self, *, idempotency_key: str) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"idempotency_key": idempotency_key})
        jobs: list[dict[str, Any]] = self._call("GET", f"/jobs?{query}")
        return jobs[0] if jobs else None

    def get(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/jobs/{urllib.parse.quote(job_id)}")
        return job

    def cancel(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{urllib.parse.quote(job_id)}/cancel", {})
