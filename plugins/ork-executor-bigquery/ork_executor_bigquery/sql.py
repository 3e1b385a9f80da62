"""Turning a task's SQL template into the query BigQuery runs, and quoting it back in errors.

Rendering goes through ork's own sandboxed, strict Jinja (``ork_core.templating.render``),
so a misspelled variable fails the task with ``<template>:<line>: '<name>' is undefined``
instead of sending ``WHERE status = ''`` to BigQuery. When BigQuery rejects a query, the
error quotes the lines it points at from the rendered SQL, which is what BigQuery saw.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ork import Context, PathError, TaskError, render

__all__ = [
    "error_position",
    "find_template",
    "offending_lines",
    "render_sql",
    "template_folders",
    "template_label",
    "template_syntax_error",
]

_CONTEXT_LINES = 1
"""Lines shown before and after the offending one."""
_WHOLE_QUERY_LINES = 12
"""A query this short is shown whole when BigQuery names no position and nothing to look for."""
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|'([^'\n]{1,200})'|`([^`\n]{1,200})`")
_POSITION = re.compile(r"\bat \[(\d+):(\d+)\]")
_TABLE_NAME = re.compile(r"\b(?:Table|table|Dataset|dataset|View|view)\s+([\w.:\-]+)")


def template_folders(ctx: Context, config_file: str) -> list[Path]:
    """Where a relative ``file`` is looked for, in order.

    The seed writes ``file: sql/staging/users.sql`` inside ``sql/staging/users.yaml``, and
    reads it relative to where ``ork run`` starts: the project. So the workflow's folder and
    the project's come first; the config file's own folder last, for self-contained folders.
    """
    folders = [ctx.workflow_dir, ctx.project_dir]
    if config_file:
        folders.append(Path(config_file).parent)
    return list(dict.fromkeys(Path(f).resolve() for f in folders))


def find_template(file: str, ctx: Context, config_file: str) -> Path:
    """The template's path, confined to the project (``ctx.resolve_path``, ork's one rule for
    workflow paths); a missing file fails the task naming every place looked in."""
    field = f"{config_file}: file" if config_file else f"tasks.{ctx.task_name}.file"
    folders = template_folders(ctx, config_file)
    try:
        return ctx.resolve_path(file, field=field, relative_to=folders, must_exist="file")
    except PathError as exc:
        if exc.outside:
            raise  # the rule's own message, naming the opt-out
        path = Path(file).expanduser()
        if path.is_absolute():
            raise TaskError(f"{_where(ctx, config_file)}: file: SQL template {file!r} does not exist") from None
        looked = [folder / path for folder in folders]
        raise TaskError(
            f"{_where(ctx, config_file)}: file: SQL template {file!r} not found; looked for "
            + ", ".join(str(p) for p in looked)
        ) from None


def template_label(path: Path, ctx: Context) -> str:
    """The template's path as a user would type it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(Path(ctx.project_dir).resolve()))
    except ValueError:
        return str(path)


def render_sql(path: Path, label: str, variables: Mapping[str, Any]) -> str:
    """Render the template; a missing variable raises TaskError naming `label`, the line and the variable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"{label}: cannot read the SQL template: {exc}") from None
    sql = render(text, variables, source=label)
    if not sql.strip():
        raise TaskError(f"{label}: the SQL template renders to an empty query")
    return sql


def template_syntax_error(text: str, label: str) -> str | None:
    """Why a SQL template does not parse ("<label>:<line>: template syntax error: …"), for ``ork validate``."""
    from ork_core.templating import syntax_error

    error = syntax_error(text)
    return None if error is None else f"{label}:{error[0]}: template syntax error: {error[1]}"


def error_position(message: str) -> tuple[int | None, int | None]:
    """BigQuery's ``at [LINE:COLUMN]`` in an error message, which is its only record of where."""
    match = _POSITION.search(message)
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


def _where(ctx: Context, config_file: str) -> str:
    return config_file or f"workflow task {ctx.task_name!r}"


def _numbered(lines: list[str], first: int, last: int, mark: int | None, column: int | None) -> list[str]:
    width = len(str(last))
    out: list[str] = []
    for number in range(first, last + 1):
        pointer = ">" if number == mark else " "
        out.append(f"  {pointer} {number:>{width}} | {lines[number - 1]}")
        if number == mark and column is not None and 1 <= column <= len(lines[number - 1]) + 1:
            out.append(f"    {' ' * width} | {' ' * (column - 1)}^")
    return out


def _needles(message: str) -> Iterable[str]:
    """Names an error message quotes (columns, tables, values), most specific first."""
    for match in _TABLE_NAME.finditer(message):
        name = match.group(1).rstrip(".:")
        parts = name.replace(":", ".").split(".")
        # "Table proj.ds.t" may be written "ds.t" or "t" in the query.
        for start in range(len(parts)):
            yield ".".join(parts[start:])
    for match in _QUOTED.finditer(message):
        yield next(g for g in match.groups() if g is not None)


def _line_naming(lines: list[str], message: str) -> int | None:
    for needle in _needles(message):
        if len(needle) < 2:
            continue
        pattern = re.compile(rf"(?<![\w]){re.escape(needle)}(?![\w])", re.IGNORECASE)
        for number, text in enumerate(lines, start=1):
            if pattern.search(text.split("--", 1)[0]):
                return number
    return None


def offending_lines(sql: str, message: str, line: int | None = None, column: int | None = None) -> str:
    """The lines of `sql` that BigQuery's error is about, numbered, the culprit marked.

    BigQuery gives a position (``at [LINE:COLUMN]``) for most query errors; when it does
    not (``Not found: Table …``), the first line naming what the message quotes is shown;
    failing that, a short query is shown whole and a long one not at all ("").
    """
    lines = sql.splitlines() or [""]
    if line is not None and 1 <= line <= len(lines):
        mark: int | None = line
    else:
        mark, column = _line_naming(lines, message), None
    if mark is None:
        if len(lines) > _WHOLE_QUERY_LINES:
            return ""
        return "\n".join(_numbered(lines, 1, len(lines), None, None))
    first = max(1, mark - _CONTEXT_LINES)
    last = min(len(lines), mark + _CONTEXT_LINES)
    return "\n".join(_numbered(lines, first, last, mark, column))
