"""The plugin manager: built-ins, entry points, quarantine, tracing, and a typed hook facade.

Built-in plugins go through exactly the path third-party ones do (a module of ``@hookimpl``
functions), so nothing a plugin author sees is special-cased for ork's own executors.
Entry points are loaded one at a time; one that fails is recorded and skipped, so a broken
``pip install`` never takes ork down (``ORK_STRICT_PLUGINS=1`` turns that into an error).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from ork_core import hookspecs
from ork_core.errors import PluginLoadError, StopSignal
from ork_core.registry import Kind, Quarantined, Register, Registry, Source

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ork_core.context import Context

ENTRY_POINT_GROUP = "ork"
PLUGIN_API_VERSION = "1.0"
"""The plugin API this ork provides; a plugin declares the range it supports with a
module-level ``ORK_PLUGIN_API = ">=1,<2"`` in its registration module."""

BUILTIN_PLUGINS: tuple[str, ...] = ("ork_core.builtin",)

_REGISTRATION_HOOKS: tuple[tuple[str, Kind], ...] = (
    ("ork_register_executors", "executor"),
    ("ork_register_job_trackers", "tracker"),
    ("ork_register_storage", "storage"),
    ("ork_register_commands", "command"),
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on", "all"}


def _names(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


@dataclass(frozen=True)
class PluginSettings:
    """The environment switches that decide which plugins load and how failures are treated."""

    strict: bool = False
    trace: bool = False
    only: frozenset[str] | None = None
    disabled: frozenset[str] = frozenset()
    disable_all: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PluginSettings:
        disabled = env.get("ORK_DISABLE_PLUGINS")
        only = env.get("ORK_PLUGINS")
        return cls(
            strict=_truthy(env.get("ORK_STRICT_PLUGINS")),
            trace=_truthy(env.get("ORK_TRACE_PLUGINS")),
            only=frozenset(_names(only)) if only is not None else None,
            disabled=frozenset() if _truthy(disabled) else frozenset(_names(disabled)),
            disable_all=_truthy(disabled),
        )

    def allows(self, entry_point: str, distribution: str | None) -> bool:
        names = {entry_point} | ({distribution} if distribution else set())
        if self.disable_all or names & self.disabled:
            return False
        return self.only is None or bool(names & self.only)


class Hooks:
    """Typed, keyword-only calls into the hooks, so the core never calls ``pm.hook.x`` untyped."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def _has(self, name: str) -> bool:
        return bool(getattr(self._pm.hook, name).get_hookimpls())

    @property
    def task_run_wrapped(self) -> bool:
        """True when a plugin besides ork's own implementation wraps task runs."""
        return len(self._pm.hook.ork_task_run.get_hookimpls()) > 1

    def executor_created(self, *, name: str, executor: object, config: BaseModel) -> None:
        self._pm.hook.ork_executor_created(name=name, executor=executor, config=config)

    def executor_closed(self, *, name: str, executor: object) -> None:
        self._pm.hook.ork_executor_closed(name=name, executor=executor)

    def run_started(self, *, run_id: str, workflow_name: str, params: dict[str, Any], resumed: bool) -> None:
        self._pm.hook.ork_run_started(run_id=run_id, workflow_name=workflow_name, params=params, resumed=resumed)

    def run_finished(self, *, run_id: str, workflow_name: str, status: str) -> None:
        self._pm.hook.ork_run_finished(run_id=run_id, workflow_name=workflow_name, status=status)

    def task_run(self, *, ctx: Context, executor: object, config_file: str, upstream: dict[str, Any]) -> Any:
        return self._pm.hook.ork_task_run(ctx=ctx, executor=executor, config_file=config_file, upstream=upstream)

    def task_status_changed(
        self,
        *,
        run_id: str,
        workflow_name: str,
        task_name: str,
        attempt: int,
        status: str,
        previous: str,
        error: str | None,
    ) -> None:
        self._pm.hook.ork_task_status_changed(
            run_id=run_id,
            workflow_name=workflow_name,
            task_name=task_name,
            attempt=attempt,
            status=status,
            previous=previous,
            error=error,
        )

    @property
    def watches_status(self) -> bool:
        return self._has("ork_task_status_changed")


@dataclass
class Plugins:
    """A loaded plugin manager with what its plugins registered."""

    pm: pluggy.PluginManager
    registry: Registry
    hooks: Hooks
    settings: PluginSettings
    load_seconds: float = 0.0


def _api_mismatch(module: ModuleType, label: str) -> str | None:
    declared = getattr(module, "ORK_PLUGIN_API", None)
    if declared is None:
        return None
    try:
        spec = SpecifierSet(str(declared))
    except InvalidSpecifier:
        return f"declares ORK_PLUGIN_API = {declared!r}, which is not a version range like '>=1,<2'"
    if Version(PLUGIN_API_VERSION) in spec:
        return None
    return (
        f"supports ork plugin API {declared} but this ork-core provides plugin API {PLUGIN_API_VERSION}; "
        f"install a release of {label} whose range includes {PLUGIN_API_VERSION}, or an ork-core whose "
        f"plugin API fits {declared}"
    )


def _trace_writer(message: str) -> None:
    sys.stderr.write(message)


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        names = ", ".join(pm.get_name(i.plugin) or "?" for i in impls)
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        _trace_writer(f"[ork trace] {hook_name}({args}) -> implementations: [{names}]\n")

    def after(outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        exc = outcome.exception
        shown = f"raised {type(exc).__name__}: {exc}" if exc else f"returned {outcome.get_result()!r}"
        _trace_writer(f"[ork trace] {hook_name} {shown}\n")

    pm.add_hookcall_monitoring(before, after)


def _entry_points() -> list[Any]:
    import importlib.metadata

    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def build_plugin_manager(
    env: Mapping[str, str] | None = None,
    *,
    plugins: Iterable[object] = (),
    entry_points: bool = True,
) -> Plugins:
    """Build a fresh plugin manager: built-ins, then entry points, then the given plugin objects.

    `plugins` are registered like entry points (tests and ``ork.testing`` use it for inline
    plugins). Nothing here is global: every call returns an independent manager.
    """
    started = time.perf_counter()
    settings = PluginSettings.from_env(os.environ if env is None else env)
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if settings.trace:
        _enable_tracing(pm)
    registry = Registry()
    sources: dict[str, Source] = {}

    def quarantine(plugin: str, source: Source, error: str) -> None:
        q = Quarantined(plugin, source.distribution, source.version, error)
        if settings.strict:
            raise PluginLoadError(
                f"plugin {q.label} failed to load: {error} (ORK_STRICT_PLUGINS=1 makes this fatal)",
                plugin=plugin,
                distribution=source.distribution or "",
                version=source.version or "",
            )
        registry.quarantined.append(q)
        if pm.has_plugin(plugin):
            pm.unregister(name=plugin)
        registry.drop_source(plugin)

    def add(obj: object, name: str, source: Source) -> None:
        try:
            pm.register(obj, name=name)
            pm.check_pending()
        except Exception as exc:
            quarantine(name, source, f"{type(exc).__name__}: {exc}")
            return
        sources[name] = source

    import importlib

    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        sources[module_name] = Source(module_name, "builtin")

    if entry_points:
        for ep in _entry_points():
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else None
            dist_version = dist.version if dist is not None else None
            source = Source(ep.name, "entrypoint", dist_name, dist_version)
            if not settings.allows(ep.name, dist_name):
                continue
            plugin_name = ep.name if not pm.has_plugin(ep.name) else f"{dist_name}:{ep.name}"
            source = Source(plugin_name, "entrypoint", dist_name, dist_version)
            try:
                module = ep.load()
            except BaseException as exc:  # SystemExit from a plugin must not end ork either
                if isinstance(exc, (KeyboardInterrupt, StopSignal)):
                    raise
                quarantine(plugin_name, source, f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}")
                continue
            mismatch = _api_mismatch(module, dist_name or ep.name) if isinstance(module, ModuleType) else None
            if mismatch:
                quarantine(plugin_name, source, mismatch)
                continue
            add(module, plugin_name, source)

    for index, obj in enumerate(plugins):
        name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{index}"
        add(obj, name, Source(name, "entrypoint", None, None))

    for hook_name, kind in _REGISTRATION_HOOKS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            name = pm.get_name(impl.plugin) or "?"
            source = sources.get(name, Source(name, "entrypoint"))
            register = Register(kind, source, registry)
            if settings.trace:
                _trace_writer(f"[ork trace] {hook_name} -> {name}\n")
            try:
                impl.function(**({"register": register} if "register" in impl.argnames else {}))
            except Exception as exc:
                if source.origin == "builtin":
                    raise
                quarantine(name, source, f"{hook_name} raised {type(exc).__name__}: {exc}")
    return Plugins(pm, registry, Hooks(pm), settings, time.perf_counter() - started)
