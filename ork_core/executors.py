"""The executor contract: ``@executor``, what it checks, and the per-run executor manager.

An executor needs ``__init__(self, config: SomeModel)`` and
``run(self, config_file, ctx, upstream={})``; ``close``, ``cancel``, ``adopt`` and ``check``
are optional and detected, never required (a small interface is easier to implement right).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from ork_core.errors import ExecutorDefinitionError

if TYPE_CHECKING:
    from ork_core.plugins import Hooks
    from ork_core.project import ResolvedExecutor

T = TypeVar("T", bound=type)

_OPTIONAL_METHODS = ("close", "cancel", "adopt", "check")


@dataclass(frozen=True)
class ExecutorSpec:
    """What ork learned about an executor class when ``@executor`` checked it."""

    cls: type
    config_model: type[BaseModel]
    output_model: type[BaseModel] | None
    task_config_model: type[BaseModel] | None
    run_is_async: bool
    optional: frozenset[str] = field(default_factory=frozenset)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.cls.__doc__ or "")

    def has(self, method: str) -> bool:
        return method in self.optional


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _hints(func: Callable[..., Any], cls: type, what: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except NameError as exc:
        raise ExecutorDefinitionError(
            f"@executor {cls.__qualname__}: cannot resolve the annotations of {what}: {exc}; "
            "import the names it uses at module level (not only under TYPE_CHECKING)"
        ) from None


def inspect_executor(cls: type, task_config: type[BaseModel] | None = None) -> ExecutorSpec:
    """Check that `cls` has the executor shape and explain precisely what is wrong if not."""
    name = getattr(cls, "__qualname__", repr(cls))
    if not isinstance(cls, type):
        raise ExecutorDefinitionError(f"@executor must decorate a class, not {type(cls).__name__} {name}")
    run = getattr(cls, "run", None)
    if run is None or not callable(run):
        raise ExecutorDefinitionError(
            f"@executor {name}: no run method; define "
            "'def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Output'"
        )
    init = cls.__dict__.get("__init__") or getattr(cls, "__init__")
    if init is object.__init__:
        raise ExecutorDefinitionError(
            f"@executor {name}: no __init__; define '__init__(self, config: MyConfig)' where MyConfig is a "
            "pydantic BaseModel (an empty model is fine)"
        )
    params = [p for p in inspect.signature(init).parameters.values()][1:]
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) == 0 or len(required) > 1:
        raise ExecutorDefinitionError(
            f"@executor {name}: __init__ must take exactly one argument, the config: "
            f"'__init__(self, config: MyConfig)' (it takes {len(params)})"
        )
    hints = _hints(init, cls, "__init__")
    config_param = params[0].name
    config_model = hints.get(config_param)
    if config_model is None:
        raise ExecutorDefinitionError(
            f"@executor {name}: __init__'s {config_param!r} has no annotation; annotate it with a pydantic "
            "BaseModel subclass so ork can validate the config in ork.yaml"
        )
    if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
        raise ExecutorDefinitionError(
            f"@executor {name}: __init__'s {config_param!r} is annotated {config_model!r}, which is not a pydantic "
            "BaseModel subclass"
        )
    run_params = list(inspect.signature(run).parameters.values())[1:]
    positional = [p for p in run_params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in run_params)
    if len(positional) < 3 and not has_varargs:
        raise ExecutorDefinitionError(
            f"@executor {name}: run takes {len(positional)} argument(s) after self; it must accept "
            "(config_file, ctx, upstream) — 'def run(self, config_file: str, ctx: Context, "
            "upstream: dict[str, object] = {})'"
        )
    output_models = _models_in(_hints(run, cls, "run").get("return"))
    if task_config is not None and not (isinstance(task_config, type) and issubclass(task_config, BaseModel)):
        raise ExecutorDefinitionError(f"@executor {name}: task_config must be a pydantic BaseModel subclass")
    optional = frozenset(m for m in _OPTIONAL_METHODS if callable(getattr(cls, m, None)))
    if "check" in optional and not isinstance(inspect.getattr_static(cls, "check"), (staticmethod, classmethod)):
        raise ExecutorDefinitionError(
            f"@executor {name}: check must be a @staticmethod or @classmethod, "
            "'def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem | str]': "
            "ork validates workflows without creating the executor"
        )
    return ExecutorSpec(
        cls=cls,
        config_model=config_model,
        output_model=output_models[0] if len(output_models) == 1 else None,
        task_config_model=task_config,
        run_is_async=inspect.iscoroutinefunction(run),
        optional=optional,
    )


@overload
def executor(cls: T, /) -> T: ...


@overload
def executor(*, task_config: type[BaseModel] | None = None) -> Callable[[T], T]: ...


def executor(cls: Any = None, /, *, task_config: type[BaseModel] | None = None) -> Any:
    """Mark a class as an ork executor and check its shape now, not at the first run.

    ``task_config`` names a pydantic model for the executor-specific keys a task may write
    inline in the workflow; ``ork validate`` checks them against it.
    """

    def apply(target: T) -> T:
        spec = inspect_executor(target, task_config)
        setattr(target, "__ork_executor__", spec)
        return target

    if cls is None:
        return apply
    return apply(cls)


def spec_of(cls: type) -> ExecutorSpec:
    """The spec of an executor class; classes without ``@executor`` are checked the same way."""
    spec = cls.__dict__.get("__ork_executor__")
    if isinstance(spec, ExecutorSpec):
        return spec
    return inspect_executor(cls)


class ExecutorManager:
    """One instance per executor name for a run: created on first use, closed at the end."""

    def __init__(self, resolve: Callable[[str], ResolvedExecutor], hooks: Hooks) -> None:
        self._resolve = resolve
        self._hooks = hooks
        self._instances: dict[str, object] = {}
        self._locks: dict[str, Any] = {}

    def resolved(self, name: str) -> ResolvedExecutor:
        return self._resolve(name)

    async def get(self, name: str) -> object:
        instance = self._instances.get(name)
        if instance is not None:
            return instance
        import asyncio  # here, not at module level: `from ork import executor` should stay light

        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            instance = self._instances.get(name)
            if instance is None:
                resolved = self._resolve(name)
                instance = await asyncio.to_thread(resolved.spec.cls, resolved.config)
                self._instances[name] = instance
                self._hooks.executor_created(name=name, executor=instance, config=resolved.config)
        return instance

    def instance(self, name: str) -> object | None:
        return self._instances.get(name)

    async def close(self) -> list[str]:
        """Close every instance; returns errors as messages instead of raising (the run is over)."""
        errors: list[str] = []
        for name, instance in list(self._instances.items()):
            close = getattr(instance, "close", None)
            try:
                if callable(close):
                    result = close()
                    if inspect.isawaitable(result):
                        await result
                self._hooks.executor_closed(name=name, executor=instance)
            except Exception as exc:
                errors.append(f"executor {name!r}: close() failed: {type(exc).__name__}: {exc}")
        self._instances.clear()
        return errors
