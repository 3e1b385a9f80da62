"""Resolving ``{const: …}``, ``{ref: tasks.<name>.output.<field>}``, ``{param: …}`` and ``{run: …}`` values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ork_core.context import RUN_VALUES
from ork_core.errors import TaskError
from ork_core.workflow import parse_ref


def lookup_ref(ref: str, upstream: Mapping[str, Any]) -> Any:
    """The value a ref points at in the upstream outputs; a missing field fails the task clearly."""
    parsed = parse_ref(ref)
    if parsed is None:
        raise TaskError(f"ref {ref!r} must look like 'tasks.<task>.output[.<field>…]'")
    task, fields = parsed
    if task not in upstream:
        raise TaskError(f"ref {ref!r}: task {task!r} has no output here (is it in depends_on?)")
    value = upstream[task]
    walked = f"tasks.{task}.output"
    for name in fields:
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            have = ", ".join(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
            raise TaskError(f"ref {ref!r}: {walked} has no field {name!r} (it has: {have})")
        walked += f".{name}"
    return value


def resolve(
    value: Any, params: Mapping[str, Any], upstream: Mapping[str, Any], run: Mapping[str, Any] | None = None,
) -> Any:
    """Replace every binding in `value` (recursively) with the value it names.

    `run` is ``ctx.run_values()``; an executor that does not pass it fails a task that uses
    ``{run: …}`` with a message saying so, instead of binding None.
    """
    if isinstance(value, dict):
        if len(value) == 1:
            ((k, v),) = value.items()
            if k == "const":
                return v
            if k == "ref" and isinstance(v, str):
                return lookup_ref(v, upstream)
            if k == "param" and isinstance(v, str):
                if v not in params:
                    raise TaskError(f"run parameter {v!r} was not given (pass --param {v}=…)")
                return params[v]
            if k == "run" and isinstance(v, str):
                if v not in RUN_VALUES:
                    raise TaskError(f"{{run: {v}}}: no such run value; valid: {', '.join(RUN_VALUES)}")
                if run is None:
                    raise TaskError(f"{{run: {v}}}: this executor does not resolve run values")
                return run[v]
        return {k: resolve(v, params, upstream, run) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, params, upstream, run) for v in value]
    return value
