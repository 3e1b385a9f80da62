"""``ork.yaml``: which executors a project configures, where state lives, how much runs at once.

``type`` resolves, in order, to a registered executor type (built-in or from an installed
plugin) or to ``module:Class`` imported from the project directory. Config values may use
``${VAR}`` (``${VAR:-default}``); a value that goes into a secret field (``SecretStr``, or a
name like ``token``, ``password``, ``Authorization``) is masked wherever ork stores or prints
it (`ork_core.secrets`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ork_core.errors import (
    DuplicateExecutorError,
    ExecutorDefinitionError,
    ExecutorImportError,
    OrkError,
    Problem,
    ProjectError,
    UnknownExecutorError,
)
from ork_core.executors import ExecutorSpec, spec_of
from ork_core.plugins import Plugins
from ork_core.registry import import_target
from ork_core.secrets import Interpolation, register_config
from ork_core.yamlfile import YamlDoc, load_yaml, read_text, suggest, validation_problems

PROJECT_FILE = "ork.yaml"
DEFAULT_MAX_CONCURRENCY = 16
MAX_CONCURRENCY = 10_000
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
EXECUTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-\.]*")
"""An executor name in ork.yaml, matched whole (fullmatch, so "bq\n" is not a name)."""
# strict: `max_concurrency: true` is not 1, "4" is not 4.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
"""A worker queue's name (``queue:``, ``ork worker --queue``): what a shell and a log line keep as one word."""


class ExecutorEntry(BaseModel):
    """One executor under ``executors:`` in ork.yaml."""

    model_config = _STRICT

    type: str
    config: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    distribution: str | None = None
    """Pick this distribution when several installed plugins register the same type name."""
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    """Every task of this executor (unless it names its own) runs on an `ork worker` serving this queue."""


class ProjectFile(BaseModel):
    model_config = _STRICT

    executors: dict[str, ExecutorEntry] = Field(default_factory=dict)
    storage: str | None = None
    max_concurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)
    max_output_bytes: int = Field(default=DEFAULT_MAX_OUTPUT_BYTES, ge=1)
    """Largest task output (its JSON encoding) ork stores; a larger one fails the task. Outputs are
    kept in memory for dependents and stored with every run: big results belong in files."""
    allowed_path_roots: list[str] = Field(default_factory=list)
    """Folders outside the project that workflows may name paths in (relative to ork.yaml's folder, or absolute)."""
    workflows: list[str] = Field(default_factory=list)
    """Glob patterns (relative to ork.yaml's folder) of the workflow files `ork scheduler` serves."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(
    value: Any, env: Mapping[str, str], path: tuple[str | int, ...], missing: list[tuple[tuple[str | int, ...], str]],
    found: list[Interpolation] | None = None,
) -> Any:
    """Replace ``${VAR}`` in every string; record variables that are not set, and in `found` every value used."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                if found is not None:
                    found.append((path, name, env[name]))
                return env[name]
            if default is not None:
                return default
            missing.append((path, name))
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, path + (k,), missing, found) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, path + (i,), missing, found) for i, v in enumerate(value)]
    return value


def unknown_keys(model: type[BaseModel], data: Any) -> list[str]:
    """Top-level keys a model would silently ignore: a typo in ork.yaml should not pass."""
    if not isinstance(data, dict) or model.model_config.get("extra") == "allow":
        return []
    known = set(model.model_fields)
    known |= {f.alias for f in model.model_fields.values() if f.alias}
    return [k for k in data if k not in known]


@dataclass(frozen=True)
class ResolvedExecutor:
    """An executor name made concrete: its class, validated config and where it came from."""

    name: str
    type: str
    source: str
    spec: ExecutorSpec
    config: BaseModel
    max_concurrency: int | None


def find_project_dir(start: Path) -> Path | None:
    """The nearest folder at or above `start` that holds an ork.yaml.

    Any ork.yaml counts, not only a regular file: a FIFO or a folder of that name is then
    reported as such, rather than silently skipped for one further up.
    """
    start = start.resolve()
    for folder in (start, *start.parents):
        if os.path.lexists(folder / PROJECT_FILE):
            return folder
    return None


@dataclass
class Project:
    """A loaded ork.yaml (or the defaults, when a folder has none) bound to a plugin manager."""

    dir: Path
    plugins: Plugins
    file: Path | None = None
    settings: ProjectFile = field(default_factory=ProjectFile)
    doc: YamlDoc | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _resolved: dict[str, ResolvedExecutor] = field(default_factory=dict)

    @classmethod
    def load(cls, start: Path, plugins: Plugins, env: Mapping[str, str] | None = None) -> Project:
        """Load the project around `start`; raises ProjectError listing every problem in ork.yaml."""
        env = dict(os.environ) if env is None else dict(env)
        folder = find_project_dir(start)
        if folder is None:
            return cls(dir=start.resolve(), plugins=plugins, env=env)
        path = folder / PROJECT_FILE
        text = read_text(path)
        if isinstance(text, Problem):
            raise ProjectError([text])
        if not text.strip():
            return cls(dir=folder, plugins=plugins, file=path, env=env)
        doc = load_yaml(path, text=text, what="a mapping with an 'executors' section", allow_empty=True)
        if doc.problems and doc.data is None:
            raise ProjectError(doc.problems)
        if doc.data is None or (isinstance(doc.data, dict) and not doc.data):
            return cls(dir=folder, plugins=plugins, file=path, doc=doc, env=env)
        problems = list(doc.problems)
        try:
            settings = ProjectFile.model_validate(doc.data)
        except ValidationError as exc:
            keys: dict[tuple[str | int, ...], Iterable[str]] = {(): ProjectFile.model_fields.keys()}
            if isinstance(doc.data, dict):
                for name in (doc.data.get("executors") or {}) if isinstance(doc.data.get("executors"), dict) else {}:
                    keys[("executors", name)] = ExecutorEntry.model_fields.keys()
            raise ProjectError(problems + validation_problems(doc, exc, valid_keys=keys)) from None
        for name in settings.executors:
            if not EXECUTOR_NAME.fullmatch(name):
                problems.append(doc.problem(("executors", name), f"executor name {name!r} must start with a letter or '_' "
                                            "and hold only letters, digits, '_', '-' and '.'"))
        if problems:
            raise ProjectError(problems)
        return cls(dir=folder, plugins=plugins, file=path, settings=settings, doc=doc, env=env)

    @functools.cached_property
    def path_roots(self) -> tuple[Path, ...]:
        """``allowed_path_roots`` as absolute folders: where workflow paths may point besides the project."""
        return tuple((self.dir / Path(r).expanduser()).resolve() for r in self.settings.allowed_path_roots)

    @property
    def label(self) -> str:
        return str(self.file) if self.file else f"{self.dir} (no {PROJECT_FILE})"

    def _problem(self, path: tuple[str | int, ...], message: str) -> Problem:
        if self.doc is not None:
            return self.doc.problem(path, message)
        return Problem(str(self.file or PROJECT_FILE), ".".join(map(str, path)), message)

    def executor_names(self) -> list[str]:
        """Every name a workflow may use: ork.yaml's names, then registered types."""
        names = list(self.settings.executors)
        names += [n for n in self.plugins.registry.names("executor") if n not in self.settings.executors]
        return names

    def resolve(self, name: str) -> ResolvedExecutor:
        """Resolve an executor name; every failure is an OrkError that names the file and field."""
        cached = self._resolved.get(name)
        if cached is not None:
            return cached
        entry = self.settings.executors.get(name)
        if entry is None:
            resolved = self._resolve_type(name, name, ExecutorEntry(type=name), in_file=False)
        else:
            resolved = self._resolve_type(name, entry.type, entry, in_file=True)
        self._resolved[name] = resolved
        return resolved

    def _resolve_type(self, name: str, type_name: str, entry: ExecutorEntry, *, in_file: bool) -> ResolvedExecutor:
        base: tuple[str | int, ...] = ("executors", name)
        registry = self.plugins.registry
        try:
            if type_name in registry.entries["executor"] or entry.distribution:
                reg = registry.get("executor", type_name, distribution=entry.distribution)
                cls = reg.load()
                source = reg.source.label
            elif ":" in type_name:
                cls = import_target(type_name, search_path=self.dir)
                source = PROJECT_FILE
            else:
                registry.get("executor", type_name)  # raises with suggestions
                raise AssertionError("unreachable")
            spec = spec_of(cls)
        except UnknownExecutorError as exc:
            if not in_file:
                names = self.executor_names()
                raise UnknownExecutorError(
                    f"executor {name!r} is not configured in {PROJECT_FILE} and is not a registered type"
                    f"{suggest(name, names)}; available: {', '.join(names) or 'none'}",
                    name=name,
                    suggestions=exc.suggestions,
                ) from None
            raise ProjectError([self._problem(base + ("type",), f"{exc} (or use 'module:Class' for a class in this project)")]) from None
        except (ExecutorImportError, ExecutorDefinitionError, DuplicateExecutorError) as exc:
            if not in_file:
                raise
            raise ProjectError([self._problem(base + ("type",), str(exc))]) from None
        missing: list[tuple[tuple[str | int, ...], str]] = []
        found: list[Interpolation] = []
        raw = expand_env(entry.config, self.env, base + ("config",), missing, found)
        # before anything can quote them: a validation message may echo a bad value
        register_config(found, spec.config_model, len(base) + 1)
        if missing:
            raise ProjectError(
                [self._problem(p, f"environment variable {var} is not set") for p, var in missing]
            )
        unknown = unknown_keys(spec.config_model, raw) if in_file else []
        if unknown:
            valid = sorted(spec.config_model.model_fields)
            raise ProjectError(
                [
                    self._problem(
                        base + ("config", key),
                        f"unknown key {key!r}{suggest(key, valid)}; valid keys: {', '.join(valid) or 'none'}",
                    )
                    for key in unknown
                ]
            )
        try:
            config = spec.config_model.model_validate(raw)
        except ValidationError as exc:
            if not in_file:
                raise ProjectError(
                    [
                        Problem(
                            self.label,
                            f"executors.{name}",
                            f"executor type {name!r} needs configuration ({'; '.join(e['msg'] + ' at ' + '.'.join(map(str, e['loc'])) for e in exc.errors(include_url=False))}); "
                            f"add it under 'executors:' in {PROJECT_FILE}",
                        )
                    ]
                ) from None
            keys: dict[tuple[str | int, ...], Iterable[str]] = {base + ("config",): spec.config_model.model_fields.keys()}
            raise ProjectError(
                validation_problems(self.doc or YamlDoc(self.label, None), exc, base + ("config",), valid_keys=keys, show_input=False)
            ) from None
        return ResolvedExecutor(name, type_name, source, spec, config, entry.max_concurrency)

    def validate(self) -> list[Problem]:
        """Resolve every configured executor and validate its config; return all problems."""
        problems: list[Problem] = []
        for name in self.settings.executors:
            try:
                self.resolve(name)
            except ProjectError as exc:
                problems.extend(exc.problems)
            except OrkError as exc:
                problems.append(self._problem(("executors", name), str(exc)))
        return problems
