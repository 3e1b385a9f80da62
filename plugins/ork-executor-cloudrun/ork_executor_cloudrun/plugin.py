"""Registration of the ``cloudrun`` executor type and job tracker with ork.

Only names and ``"module:Class"`` strings live here: ``ork executors`` and plugin
discovery import this module, and must not pay for ``google.cloud.run_v2``.
"""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("cloudrun", "ork_executor_cloudrun.executor:CloudRunExecutor")


@hookimpl
def ork_register_job_trackers(register: Register) -> None:
    register("cloudrun", "ork_executor_cloudrun.tracker:CloudRunJobTracker")
