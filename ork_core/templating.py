"""Rendering user templates (SQL, URLs, bodies) safely and strictly.

Sandboxed, so a template cannot reach Python internals; strict, so a misspelled variable
fails the task naming the template, the line and the variable instead of rendering "".
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from ork_core.context import ork_variables  # re-exported: the ``ork.`` variables of templates
from ork_core.errors import TaskError

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@functools.lru_cache(maxsize=512)
def _compile(template: str) -> jinja2.Template:
    """Compiled once per distinct text: 5,000 tasks of one workflow share a few templates."""
    return _ENV.from_string(template)


def syntax_error(template: str) -> tuple[int, str] | None:
    """Why `template` does not parse, as (line, message), or None: for ``ork validate``, before any task runs."""
    try:
        _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        return exc.lineno, exc.message or "invalid syntax"
    return None


def render(template: str, variables: Mapping[str, Any], *, source: str = "<template>") -> str:
    """Render `template`; an undefined variable or a syntax error raises TaskError naming `source`:line."""
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TaskError(f"{source}:{exc.lineno}: template syntax error: {exc.message}") from None
    try:
        return compiled.render(**variables)
    except jinja2.UndefinedError as exc:
        line = _error_line(exc)
        where = f"{source}:{line}" if line else source
        names = ", ".join(sorted(variables)) or "none"
        raise TaskError(f"{where}: {exc.message} (variables available: {names})") from None
    except jinja2.TemplateError as exc:
        raise TaskError(f"{source}: template error: {exc}") from None


def _error_line(exc: BaseException) -> int | None:
    """The template line the error happened on, from the traceback of the compiled template."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_value(value: Any, variables: Mapping[str, Any], *, source: str) -> Any:
    """Render every string inside `value` (dicts and lists walked recursively)."""
    if isinstance(value, str):
        return render(value, variables, source=source) if ("{{" in value or "{%" in value) else value
    if isinstance(value, dict):
        return {k: render_value(v, variables, source=f"{source}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, variables, source=f"{source}[{i}]") for i, v in enumerate(value)]
    return value


__all__ = ["ork_variables", "render", "render_value", "syntax_error"]
