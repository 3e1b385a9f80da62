"""What plugins registered: executor types, job trackers and storage backends, by name.

Registration hooks fill one `Registry`; a target stays a ``"module:Class"`` string until
the first time it is used, which is what keeps `ork executors` from importing google-cloud.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ork_core.errors import DuplicateExecutorError, ExecutorImportError, PluginError, StopSignal, UnknownExecutorError

Kind = Literal["executor", "tracker", "storage", "command"]
_KIND_WORDS = {"executor": "executor type", "tracker": "job tracker", "storage": "storage scheme", "command": "command"}


@dataclass(frozen=True)
class Source:
    """Where a registration came from, for messages and `ork executors`."""

    plugin: str
    origin: Literal["builtin", "entrypoint", "project"]
    distribution: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        if self.origin == "builtin":
            return "built-in"
        if self.origin == "project":
            return "ork.yaml"
        return f"{self.distribution}=={self.version}" if self.distribution else self.plugin


def import_target(target: str, *, search_path: Path | None = None, want_class: bool = True) -> Any:
    """Import ``"module:Class"``; tell a typo apart from a module whose dependency is missing."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ExecutorImportError(f"{target!r} is not of the form 'module:Class'")
    added = False
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
        added = True
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            where = f" (looked in {search_path} and the installed packages)" if search_path else ""
            raise ExecutorImportError(f"module {module_name!r} not found{where}") from exc
        raise ExecutorImportError(
            f"module {module_name!r} was found but needs {missing!r}, which is not installed: {exc}"
        ) from exc
    except StopSignal:
        raise  # ork is being stopped: not the module's failure
    except (Exception, SystemExit) as exc:  # a plugin's import-time bug (or sys.exit) must not read like a typo, nor end ork
        raise ExecutorImportError(f"module {module_name!r} failed to import: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(str(search_path))
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ExecutorImportError(f"module {module_name!r} has no attribute {part!r}{hint}") from None
    if want_class and not isinstance(obj, type):
        raise ExecutorImportError(f"{target!r} is a {type(obj).__name__}, not a class")
    return obj


@dataclass
class Registration:
    """One registered name; `load()` imports a lazy target once."""

    kind: Kind
    name: str
    target: type | str
    source: Source
    _loaded: Any = field(default=None, repr=False)

    @property
    def target_path(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{self.target.__qualname__}"

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None or not isinstance(self.target, str)

    def load(self, search_path: Path | None = None) -> Any:
        if self._loaded is None:
            self._loaded = (
                import_target(self.target, search_path=search_path, want_class=self.kind != "command")
                if isinstance(self.target, str)
                else self.target
            )
        return self._loaded


@dataclass(frozen=True)
class Quarantined:
    """A plugin that failed to import, register or pass the API-version check."""

    plugin: str
    distribution: str | None
    version: str | None
    error: str

    @property
    def label(self) -> str:
        return f"{self.distribution}=={self.version}" if self.distribution else self.plugin


class Register:
    """The callable handed to ``ork_register_*`` hooks: ``register(name, target)``."""

    def __init__(self, kind: Kind, source: Source, registry: Registry) -> None:
        self._kind = kind
        self._source = source
        self._registry = registry

    def __call__(self, name: str, target: type | str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{self._source.label}: {_KIND_WORDS[self._kind]} name must be a non-empty string")
        if isinstance(target, str):
            if ":" not in target:
                raise PluginError(
                    f"{self._source.label}: target {target!r} for {name!r} must be a class or 'module:Class'"
                )
        elif not isinstance(target, type) and self._kind != "command":
            raise PluginError(f"{self._source.label}: target for {name!r} must be a class or 'module:Class'")
        self._registry.add(Registration(self._kind, name, target, self._source))


class Registry:
    """Everything registered, plus the plugins that were quarantined on the way."""

    def __init__(self) -> None:
        self.entries: dict[Kind, dict[str, list[Registration]]] = {
            "executor": {}, "tracker": {}, "storage": {}, "command": {}
        }
        self.quarantined: list[Quarantined] = []

    def add(self, registration: Registration) -> None:
        regs = self.entries[registration.kind].setdefault(registration.name, [])
        if any(r.source == registration.source for r in regs):
            regs[:] = [r for r in regs if r.source != registration.source]
        regs.append(registration)

    def drop_source(self, plugin: str) -> None:
        for table in self.entries.values():
            for name in list(table):
                table[name] = [r for r in table[name] if r.source.plugin != plugin]
                if not table[name]:
                    del table[name]

    def names(self, kind: Kind) -> list[str]:
        return sorted(self.entries[kind])

    def all(self, kind: Kind) -> list[Registration]:
        return [r for name in sorted(self.entries[kind]) for r in self.entries[kind][name]]

    def quarantined_for(self, name: str) -> Quarantined | None:
        """A quarantined plugin whose entry-point or distribution name suggests it provides `name`."""
        for q in self.quarantined:
            if name in q.plugin or (q.distribution and name in q.distribution):
                return q
        return None

    def get(self, kind: Kind, name: str, *, distribution: str | None = None) -> Registration:
        regs = self.entries[kind].get(name, [])
        if distribution is not None:
            regs = [r for r in regs if r.source.distribution == distribution]
        if len(regs) == 1:
            return regs[0]
        if len(regs) > 1:
            raise DuplicateExecutorError(name, [r.source.label for r in regs])
        word = _KIND_WORDS[kind]
        broken = self.quarantined_for(name)
        if broken is not None:
            raise UnknownExecutorError(
                f"{word} {name!r} is unavailable: plugin {broken.label} failed to load: {broken.error}",
                name=name,
            )
        if distribution is not None:
            raise UnknownExecutorError(f"no installed distribution {distribution!r} registers {word} {name!r}", name=name)
        available = self.names(kind)
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(available) or "none"
        raise UnknownExecutorError(f"unknown {word} {name!r}{hint} (available: {listing})", name=name, suggestions=close)
