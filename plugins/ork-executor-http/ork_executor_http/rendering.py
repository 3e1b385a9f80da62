"""Turning a task's request keys into a concrete request: bindings, then strict templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ork import Context
from ork_core.bindings import resolve
from ork_core.templating import ork_variables, render_value
from ork_executor_http.config import RequestKeys


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None


def template_variables(ctx: Context, upstream: Mapping[str, Any]) -> dict[str, Any]:
    """What a task's templates may refer to (``run_id`` is added for status and cancel URLs)."""
    return {
        "params": dict(ctx.params),
        "upstream": dict(upstream),
        "ork": ork_variables(ctx),
    }


def render_text(template: str, variables: Mapping[str, Any], *, ctx: Context, key: str) -> str:
    rendered = render_value(template, variables, source=f"task {ctx.task_name!r} {key}")
    return str(rendered)


def prepare(keys: RequestKeys, variables: Mapping[str, Any], ctx: Context, upstream: Mapping[str, Any]) -> Request:
    """The request `keys` describe, with ``{ref}``/``{param}`` bound and every template rendered."""
    source = f"task {ctx.task_name!r}"
    return Request(
        method=keys.method,
        url=render_text(keys.url, variables, ctx=ctx, key="url"),
        headers={k: str(v) for k, v in render_value(keys.headers, variables, source=f"{source} headers").items()},
        query=render_value(resolve(keys.query, ctx.params, upstream, ctx.run_values()), variables, source=f"{source} query"),
        body=render_value(resolve(keys.body, ctx.params, upstream, ctx.run_values()), variables, source=f"{source} body"),
    )
