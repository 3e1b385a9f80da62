"""Dotted paths into response JSON: ``data.items.0.id``.

A path that does not match says where it stopped and what was there instead, because
the person fixing it is looking at a workflow file, not at the response.
"""

from __future__ import annotations

from typing import Any

from ork import TaskError


class PathNotFound(TaskError):
    """A dotted path does not exist in a JSON document."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


def check_path(path: str) -> str:
    """Validate the syntax of a dotted path (for pydantic validators)."""
    if not path or any(part == "" for part in path.split(".")):
        raise ValueError(f"{path!r} is not a dotted path; write keys separated by dots, e.g. 'data.items.0.id'")
    return path


def _show(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:12])) + (", …" if len(value) > 12 else "")
        return f"an object with keys: {keys}" if value else "an empty object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:80]


def get_path(document: Any, path: str, *, what: str) -> Any:
    """The value at `path` in `document`; raises PathNotFound naming `what`, the path and what was found."""
    current = document
    walked: list[str] = []
    for part in path.split("."):
        where = f"at {'.'.join(walked)!r}" if walked else "at the top"
        if isinstance(current, dict):
            if part not in current:
                raise PathNotFound(f"{what}: no {part!r} {where} of the response JSON, which has {_show(current)}", path=path)
            current = current[part]
        elif isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise PathNotFound(f"{what}: no item {part!r} {where} of the response JSON, which has {_show(current)}", path=path) from None
        else:
            raise PathNotFound(f"{what}: cannot look up {part!r} {where} of the response JSON, which has {_show(current)}", path=path)
        walked.append(part)
    return current
