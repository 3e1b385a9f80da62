"""The one rule for every path a workflow names: inside the project folder, or refused.

A workflow is input, often reviewed less carefully than code: ``file: ../../etc/passwd``,
an absolute path or a symlink pointing out of the project should not quietly make a task
read (or run, or ``cd`` into) something nobody meant to share with it. Every executor in
this repository, and the core's ``config_file``, resolve workflow paths through
`resolve_path` (tasks reach it as ``ctx.resolve_path``), so the rule, its message and its
opt-out are the same everywhere:

- a relative path is relative to the workflow file's folder (or to the folders an executor
  documents, tried in order);
- symlinks are followed (``Path.resolve``), so a link inside the project that points out
  of it is outside;
- the result must be inside the project folder (the one holding ``ork.yaml``) or inside one
  of the folders listed under ``allowed_path_roots`` in ``ork.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ork_core.errors import PathError

OPT_OUT = "allowed_path_roots"
"""The ``ork.yaml`` key that lists folders outside the project that workflows may name paths in."""

__all__ = ["OPT_OUT", "PathError", "check_inside", "resolve_path"]


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_inside(
    path: Path,
    *,
    raw: str,
    field: str,
    project_dir: Path,
    allowed_roots: Sequence[Path] = (),
) -> Path:
    """`path` resolved (symlinks followed); raises PathError when it is outside the allowed folders."""
    resolved = path.resolve()
    project = project_dir.resolve()
    roots = [project, *(Path(r).resolve() for r in allowed_roots)]
    if _inside(resolved, roots):
        return resolved
    extra = f" or {', '.join(str(r) for r in roots[1:])}" if len(roots) > 1 else ""
    raise PathError(
        f"{raw!r} resolves to {resolved}, outside the project folder {project}{extra}; "
        f"move it into the project, or list its folder under '{OPT_OUT}:' in ork.yaml to allow it",
        field=field,
        value=raw,
        resolved=resolved,
        outside=True,
    )


def resolve_path(
    raw: str | os.PathLike[str],
    *,
    field: str,
    relative_to: Path | Sequence[Path],
    project_dir: Path,
    allowed_roots: Sequence[Path] = (),
    must_exist: Literal["file", "dir"] | None = None,
) -> Path:
    """Where a path written in a workflow points, checked against the project folder.

    `relative_to` is the folder a relative path starts from, or several, tried in order: the
    first where the path exists wins (the BigQuery executor looks beside the workflow, then in
    the project, then beside the config file). `field` names the key in messages
    (``tasks.load.file``). With `must_exist`, a missing file or folder is a PathError that
    lists every place looked in. Raises PathError, a TaskError, so a task that meets one fails
    with its message and ``ork validate`` reports it as a problem of that field.
    """
    text = os.fspath(raw)
    if "\0" in text:  # the OS refuses it anyway, with a ValueError nobody could place
        raise PathError(f"{text!r} contains a NUL character, which no path can", field=field, value=text, resolved=None, outside=False)
    given = Path(text).expanduser()
    bases = [relative_to] if isinstance(relative_to, Path) else list(relative_to)
    candidates = [given] if given.is_absolute() else [Path(b) / given for b in bases]
    chosen = candidates[0]
    if must_exist is not None or len(candidates) > 1:
        test = Path.is_file if must_exist == "file" else Path.is_dir if must_exist == "dir" else Path.exists
        chosen = next((c for c in candidates if test(c)), candidates[0])
    resolved = check_inside(chosen, raw=text, field=field, project_dir=project_dir, allowed_roots=allowed_roots)
    if must_exist == "file" and not resolved.is_file():
        kind = "a folder, not a file" if resolved.is_dir() else "not a regular file" if resolved.exists() else "not found"
        raise PathError(f"{text!r} {kind} (looked for {_looked(candidates)})", field=field, value=text, resolved=resolved, outside=False)
    if must_exist == "dir" and not resolved.is_dir():
        kind = "a file, not a folder" if resolved.exists() else "not found"
        raise PathError(f"{text!r} {kind} (looked for {_looked(candidates)})", field=field, value=text, resolved=resolved, outside=False)
    return resolved


def _looked(candidates: Sequence[Path]) -> str:
    return ", ".join(dict.fromkeys(str(Path(os.path.abspath(c))) for c in candidates))
