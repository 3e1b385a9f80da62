"""Reading an executor's task settings from ``config_file`` and the task's inline keys.

The seed's executors read a YAML ``config_file``; workflow authors also like to write the
same keys inline. Both are merged here (inline keys win) and validated against the
executor's model, with errors that name the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ork_core.context import Context
from ork_core.errors import TaskError
from ork_core.yamlfile import YamlDoc, load_yaml, validation_problems

M = TypeVar("M", bound=BaseModel)


def load_task_config(model: type[M], config_file: str, ctx: Context) -> M:
    """The task's settings as `model`; raises TaskError naming the file, line and field."""
    data: dict[str, Any] = {}
    doc = YamlDoc(f"workflow task {ctx.task_name!r}", None)
    if config_file:
        doc = load_yaml(Path(config_file), what="a mapping of task settings")
        if doc.problems:
            raise TaskError("; ".join(str(p) for p in doc.problems))
        data.update(doc.data)
    data.update(ctx.task_config)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(doc, exc, valid_keys={(): model.model_fields.keys()})
        raise TaskError("; ".join(str(p) for p in problems)) from None
