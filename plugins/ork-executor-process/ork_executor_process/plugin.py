"""Registration only: ork imports this module at start-up, so it imports nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ork import hookimpl

if TYPE_CHECKING:
    from ork import Register

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("process", "ork_executor_process.executor:ProcessExecutor")
