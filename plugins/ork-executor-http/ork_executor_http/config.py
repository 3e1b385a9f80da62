"""What ork.yaml (executor config) and a workflow task (task keys) may say to these executors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from ork_executor_http.credentials import is_sensitive
from ork_executor_http.jsonpath import check_path

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class HttpConfig(BaseModel):
    """Executor config (``executors.<name>.config`` in ork.yaml), shared by ``http`` and ``http_async``."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("", description="Prefix for relative task URLs, e.g. https://api.example.com/v1")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Sent with every request (kickoff, status polls, cancel); put credentials here as ${ENV_VAR}. "
        "Values are never logged or stored.",
    )
    timeout: PositiveFloat = Field(30.0, description="Seconds to wait for each request (connect, send, read).")
    verify: bool | str = Field(True, description="TLS certificate verification: true, false, or the path of a CA bundle.")
    idempotency_header: str | None = Field(
        "Idempotency-Key",
        description="Header carrying ork's idempotency key on the request that starts work; null to send none.",
    )
    max_connections: PositiveInt = Field(100, description="Most connections open at once (requests beyond wait).")
    max_poll_failures: PositiveInt = Field(10, description="Status polls that may fail in a row before the task fails.")
    max_backoff: PositiveFloat = Field(60.0, description="Longest wait, in seconds, between status polls after failures.")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in value:
            if not name or any(c in name for c in " :\r\n"):
                raise ValueError(f"{name!r} is not a valid header name")
        return value


class RequestKeys(BaseModel):
    """The request a task sends. Strings are Jinja templates (strict: an unknown variable fails the task).

    Template variables: ``params`` (run parameters), ``upstream`` (outputs of the tasks this one
    depends on, by name) and ``ork`` (``run_id``, ``task``, ``workflow``, ``try_number``,
    ``idempotency_key``). Values in ``body`` and ``query`` may also be ``{ref: …}`` / ``{param: …}``.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Absolute, or relative to the executor's base_url.")
    method: Method = Field("GET", description="GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (no credentials).")
    query: dict[str, Any] = Field(default_factory=dict, description="Query parameters.")
    body: Any = Field(None, description="A JSON body.")
    accept_status: list[int] = Field(default_factory=list, description="Status codes that count as success (default: any 2xx).")
    output_path: str | None = Field(None, description="Dotted path of the output in the response JSON (default: the whole JSON).")

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if is_sensitive(name):
                raise ValueError(
                    f"header {name!r} carries credentials; put it under the executor's config.headers in ork.yaml "
                    "(e.g. Authorization: \"Bearer ${API_TOKEN}\"), which is never stored; task keys are stored with every run"
                )
        return value

    @field_validator("accept_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        bad = [code for code in value if not 100 <= code <= 599]
        if bad:
            raise ValueError(f"{bad} are not HTTP status codes (100-599)")
        return value

    @field_validator("output_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)


class HttpTask(RequestKeys):
    """Task keys for ``http``: one request; its response JSON (or a part of it) is the output."""


class HttpAsyncTask(RequestKeys):
    """Task keys for ``http_async``: the kickoff request, then how to poll, cancel and read the job.

    ``status_url``, ``cancel_url`` and ``lookup_url`` are templates too; the first two may also
    use ``run_id`` (the id the kickoff returned).
    """

    method: Method = Field("POST", description="The kickoff's method.")
    run_id_path: str = Field("run_id", description="Dotted path of the job's id in the kickoff response JSON.")
    status_url: str = Field(description="The job's status URL, e.g. /runs/{{ run_id }}.")
    status_path: str = Field("status", description="Dotted path of the job's state in the status response JSON.")
    success_states: list[str] = Field(
        default_factory=lambda: ["completed"], min_length=1, description="States that end the job successfully."
    )
    failure_states: list[str] = Field(
        default_factory=lambda: ["failed", "cancelled"],
        min_length=1,
        description="States that end the job with a failure; any other state means it is still running.",
    )
    error_path: str | None = Field(None, description="Dotted path of an error message in a failed job's status response.")
    poll_interval: PositiveFloat = Field(2.0, description="Seconds between status polls.")
    cancel_url: str | None = Field(None, description="URL that cancels the job (on timeout or a user's cancel).")
    cancel_method: Method = Field("DELETE", description="The method of the cancel request.")
    lookup_url: str | None = Field(
        None,
        description="URL that finds a job by idempotency key ({{ ork.idempotency_key }}); lets `ork resume` adopt a job "
        "whose kickoff was sent just before ork died. 404 means no such job.",
    )
    lookup_run_id_path: str | None = Field(None, description="Dotted path of the run id in the lookup response (default: run_id_path).")

    @field_validator("cancel_method", mode="before")
    @classmethod
    def _upper_cancel(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("run_id_path", "status_path", "error_path", "lookup_run_id_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)

    @model_validator(mode="after")
    def _states(self) -> HttpAsyncTask:
        both = sorted(set(self.success_states) & set(self.failure_states))
        if both:
            raise ValueError(f"state(s) {', '.join(both)} are listed in both success_states and failure_states")
        return self
