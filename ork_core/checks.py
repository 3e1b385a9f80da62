"""What an executor's optional ``check`` gets: where a task is written, and helpers to judge it.

``ork validate`` (and ``ork run``, before anything runs) checks the keys every task has and
the executor's task model. What only the executor knows — that a script exists, that a SQL
template parses, that the function a task names is in its file, that the keys a
``config_file`` adds are valid — it checks statically in ``check(task, where)``, a
``@staticmethod`` or ``@classmethod`` (ork validates without creating executors), returning
problems. ``where`` is a `TaskWhere`: it locates a problem by file, line and field, reads a
``config_file`` the way ``load_task_config`` does, checks paths with ork's one rule
(``resolve_path``) and templates for syntax, and has a cache shared by every task of one
validation, so a file named by 10,000 tasks is read once.

A check must never run user code: parse, do not import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ork_core.errors import Problem
from ork_core.paths import resolve_path
from ork_core.yamlfile import YamlDoc, dotted, load_yaml, validation_problems

M = TypeVar("M", bound=BaseModel)
FieldT = str | Sequence[str | int]

__all__ = ["TaskWhere", "template_problems"]


def _key(field_: FieldT) -> tuple[str | int, ...]:
    if isinstance(field_, str):
        return tuple(field_.split(".")) if field_ else ()
    return tuple(field_)


@dataclass
class TaskWhere:
    """One task of a workflow being validated, for its executor's ``check``."""

    task_name: str
    doc: YamlDoc
    """The workflow file, with the line of every key."""
    workflow_dir: Path
    project_dir: Path
    config: BaseModel
    """The executor's config from ork.yaml, validated."""
    task_keys: Mapping[str, Any]
    """The task's executor-specific keys as written in the workflow."""
    config_file: str = ""
    """The task's ``config_file`` (absolute, checked to exist), or ""."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The task's ``env`` (a key every task has; some executors render it)."""
    allowed_path_roots: tuple[Path, ...] = ()
    cache: dict[Any, Any] = field(default_factory=dict)
    """Shared by every task of one validation: key it by what you read (a path, a module)."""

    @property
    def workflow_file(self) -> str:
        return self.doc.file

    def field_name(self, field_: FieldT) -> str:
        """``tasks.<task>.<field>``, as messages name a key."""
        return dotted(("tasks", self.task_name, *_key(field_)))

    def _config_doc(self) -> YamlDoc | None:
        if not self.config_file:
            return None
        key = ("ork.config_file", self.config_file)
        if key not in self.cache:
            self.cache[key] = load_yaml(Path(self.config_file), what="a mapping of task settings")
        doc: YamlDoc = self.cache[key]
        return doc

    def problem(self, field_: FieldT, message: str) -> Problem:
        """`message` about `field_` (a key of the task, dotted or as a tuple), located at its line.

        A key the task does not write but its ``config_file`` does is located in that file.
        """
        key = _key(field_)
        if key and key[0] not in self.task_keys:
            doc = self._config_doc()
            if doc is not None and isinstance(doc.data, dict) and key[0] in doc.data:
                return doc.problem(key, message)
        return self.doc.problem(("tasks", self.task_name, *key), message)

    def resolve_path(
        self,
        raw: str,
        *,
        field: FieldT,
        relative_to: Path | Sequence[Path] | None = None,
        must_exist: Literal["file", "dir"] | None = None,
    ) -> Path:
        """`ctx.resolve_path` at validation time: raises PathError (show its ``reason`` with `problem`)."""
        return resolve_path(
            raw,
            field=self.field_name(field),
            relative_to=self.workflow_dir if relative_to is None else relative_to,
            project_dir=self.project_dir,
            allowed_roots=self.allowed_path_roots,
            must_exist=must_exist,
        )

    def task_config(self, model: type[M], *, merge_config_file: bool = True) -> tuple[M | None, list[Problem]]:
        """The task's settings as `model`, read as ``load_task_config`` reads them at run time.

        With `merge_config_file` (for executors whose ``config_file`` holds task keys), the
        file's keys are merged under the task's, so a missing file, invalid YAML and keys that
        fail `model` are reported now, at the config file's line. Returns the model, or None
        and the problems.
        """
        data: dict[str, Any] = {}
        doc = self._config_doc() if merge_config_file else None
        if doc is not None:
            if doc.problems:
                return None, list(doc.problems)
            data.update(doc.data)
        data.update(self.task_keys)
        try:
            return model.model_validate(data), []
        except ValidationError as exc:
            problems: list[Problem] = []
            valid = model.model_fields.keys()
            for err in exc.errors(include_url=False):
                loc = tuple(err["loc"])
                if doc is not None and loc and loc[0] not in self.task_keys and (
                    err["type"] == "missing" or (isinstance(doc.data, dict) and loc[0] in doc.data)
                ):
                    problems += validation_problems(doc, [err], valid_keys={(): valid})
                else:
                    base = ("tasks", self.task_name)
                    problems += validation_problems(self.doc, [err], base, valid_keys={base: valid})
            return None, problems

    def templates(self, value: Any, field: FieldT) -> list[Problem]:
        """Syntax errors in the Jinja templates inside `value` (strings, walked through dicts and lists)."""
        return [self.problem(where, message) for where, message in template_problems(value, _key(field))]


def template_problems(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path, message)`` for every string in `value` that is a template and does not parse.

    The same sandboxed environment renders them at run time (``ork_core.templating``), and
    compiled templates are cached there, so checking costs nothing extra when the task runs.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value and "{#" not in value:
            return []
        from ork_core.templating import syntax_error

        error = syntax_error(value)
        return [] if error is None else [(path, f"template syntax error on line {error[0]}: {error[1]}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in template_problems(v, path + (str(k),))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in template_problems(v, path + (i,))]
    return []
