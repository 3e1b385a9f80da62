"""Registration only: names and lazy targets, so `ork executors` never imports Ray."""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("ray_actor", "ork_executor_ray.actor:RayActorExecutor")
