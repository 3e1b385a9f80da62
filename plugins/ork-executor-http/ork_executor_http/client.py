"""The HTTP client an executor instance shares with its job tracker, and the errors it raises.

Connections are reused across a run's requests and the tracker's status polls. httpcore's
pool walks every connection (with two system calls each) and every waiting request each
time a request starts or ends, so one big pool costs more per request the bigger it is; a
batch of 200 status polls through a 100-connection pool spent most of its CPU there. So the
executor's ``max_connections`` are split over small pools of `SHARD` connections each, a
request goes to the least busy one, and requests wait for a free connection here, never
in a pool's queue. Measured with bench/deferred.py: ~2.5x less CPU per status poll.

Messages name the method and the URL with credentials masked; headers are never part of one.
A response body may still echo them (some services put the request in their error), so the
client registers the values of credential headers and of a ``base_url`` password with ork
(``ork.register_secret``), which masks them in everything it stores and prints.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from typing import Any

import httpx

from ork import TaskError, mask_secrets, register_secret
from ork_executor_http.config import HttpConfig
from ork_executor_http.credentials import is_sensitive, redact_url

_SNIPPET = 300
SHARD = 4
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.DecodingError)
"""Failures after the request (or part of it) left: the service may have acted on it.
A connect or pool timeout, or a refused connection, means it was never sent."""


class HttpError(TaskError):
    """A request failed, timed out, or got a response the task does not accept."""

    def __init__(self, message: str, *, method: str, url: str, status: int | None = None, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.maybe_sent = maybe_sent
        """No answer came, but the request may have reached the service (a read timeout, a reset)."""


class HttpTimeout(HttpError):
    """No response within the executor's ``timeout``.

    Deliberately not a ``TimeoutError``: ork reads that as the task's own ``timeout`` expiring.
    """


def _verify(value: bool | str) -> bool | ssl.SSLContext:
    """One TLS context for every pool (loading the CA bundle once, not once per pool)."""
    if value is False:
        return False
    if isinstance(value, str):
        return ssl.create_default_context(cafile=value)
    return httpx.create_ssl_context()


def snippet(response: httpx.Response) -> str:
    """The start of a body for a message; masked before it is cut, so no secret is left half-shown."""
    text = mask_secrets(" ".join(response.text.split()))
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "") if text else "(empty)"


class HttpClient:
    """The pools of one executor instance, created on first use inside ork's event loop."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self._pools: list[httpx.AsyncClient] = []
        self._busy: list[int] = []
        self._slots: asyncio.Semaphore | None = None
        self._base_auth = _register_credentials(config)

    def _auth_for(self, url: httpx.URL) -> httpx.BasicAuth | None:
        """The base URL's user and password for a URL of the same origin that carries none.

        Handles store URLs without the password (`ork_executor_http.executors`); a status poll
        to the service of ``base_url`` gets the credentials from the config again.
        """
        if self._base_auth is None or url.userinfo:
            return None
        origin, auth = self._base_auth
        return auth if (url.scheme, url.host, url.port) == origin else None

    def _open(self) -> None:
        verify = _verify(self.config.verify)
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        left = self.config.max_connections
        while left > 0:
            size = min(SHARD, left)
            left -= size
            self._pools.append(
                httpx.AsyncClient(
                    base_url=self.config.base_url,
                    headers=headers,
                    timeout=self.config.timeout,
                    verify=verify,
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                )
            )
        self._busy = [0] * len(self._pools)
        self._slots = asyncio.Semaphore(self.config.max_connections)

    @property
    def client(self) -> httpx.AsyncClient:
        if not self._pools:
            self._open()
        return self._pools[0]

    def absolute(self, url: str) -> str:
        """`url` joined to the base URL the way requests are."""
        return str(self.client.build_request("GET", url).url)

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """Send one request; a transport failure or timeout raises HttpError saying what was being done."""
        try:
            request = self.client.build_request(
                method, url, headers=headers, params=query or None, json=body
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError, ValueError) as exc:
            raise HttpError(f"{what}: cannot build {method} {redact_url(url)}: {exc}", method=method, url=url) from None
        assert self._slots is not None  # opened by build_request above
        try:
            async with self._slots:
                pool = self._busy.index(min(self._busy))
                self._busy[pool] += 1
                try:
                    return await self._pools[pool].send(request, auth=self._auth_for(request.url))
                finally:
                    self._busy[pool] -= 1
        except httpx.TimeoutException as exc:
            shown = redact_url(str(request.url))
            raise HttpTimeout(
                f"{what}: {method} {shown} got no response within {self.config.timeout:g}s (the executor's timeout)",
                method=method,
                url=shown,
                maybe_sent=isinstance(exc, _MAYBE_SENT),
            ) from None
        except httpx.HTTPError as exc:
            shown = redact_url(str(request.url))
            raise HttpError(
                f"{what}: {method} {shown} failed: {type(exc).__name__}: {exc}", method=method, url=shown,
                maybe_sent=isinstance(exc, _MAYBE_SENT),
            ) from None

    @staticmethod
    def expect(response: httpx.Response, accept: list[int], *, what: str) -> None:
        """Raise HttpError unless the status is in `accept` (any 2xx when it is empty)."""
        ok = response.status_code in accept if accept else response.is_success
        if ok:
            return
        request = response.request
        expected = ", ".join(map(str, accept)) if accept else "a 2xx status"
        shown = redact_url(str(request.url))
        raise HttpError(
            f"{what}: {request.method} {shown} returned {response.status_code} {response.reason_phrase} "
            f"(expected {expected}); body: {snippet(response)}",
            method=request.method,
            url=shown,
            status=response.status_code,
        )

    @staticmethod
    def json_of(response: httpx.Response, *, what: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            request = response.request
            kind = response.headers.get("content-type", "no content-type")
            shown = redact_url(str(request.url))
            raise HttpError(
                f"{what}: {request.method} {shown} returned a body that is not JSON ({kind}): {snippet(response)}",
                method=request.method,
                url=shown,
                status=response.status_code,
            ) from None

    async def aclose(self) -> None:
        pools, self._pools = self._pools, []
        for pool in pools:
            await pool.aclose()


def _register_credentials(config: HttpConfig) -> tuple[tuple[str, str, int | None], httpx.BasicAuth] | None:
    """Tell ork which values to mask; return the base URL's origin and credentials, if it has a password."""
    for name, value in config.headers.items():
        if is_sensitive(name):
            secret = value.get_secret_value()
            register_secret(secret)
            scheme, _, credential = secret.partition(" ")
            if credential and scheme.lower() in ("bearer", "basic", "token", "digest"):
                register_secret(credential)
    if not config.base_url:
        return None
    url = httpx.URL(config.base_url)
    if not url.password:
        return None
    register_secret(url.password)
    basic = base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
    register_secret(basic)  # what a service echoing the Authorization header would show
    return (url.scheme, url.host, url.port), httpx.BasicAuth(url.username, url.password)


def elapsed_ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
