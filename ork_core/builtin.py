"""ork's own plugin: the ``python`` executor, the ``sqlite`` storage backend, and the
innermost ``ork_task_run`` that calls the executor. Registered through the same path as
any third-party plugin (see `ork_core.plugins.BUILTIN_PLUGINS`)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from ork_core.context import Context
from ork_core.hookspecs import hookimpl
from ork_core.registry import Register


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("python", "ork_core.python_executor:PythonExecutor")


@hookimpl
def ork_register_storage(register: Register) -> None:
    register("sqlite", "ork_core.storage.sqlite:SQLiteStorage")


@hookimpl(trylast=True)
def ork_task_run(ctx: Context, executor: object, config_file: str, upstream: dict[str, Any]) -> Any:
    result = getattr(executor, "run")(config_file, ctx, upstream)
    if inspect.isawaitable(result):
        if ctx.loop is None:
            raise RuntimeError("an async run needs the scheduler's event loop")

        async def wait() -> Any:
            return await result

        result = asyncio.run_coroutine_threadsafe(wait(), ctx.loop).result()
    return result
