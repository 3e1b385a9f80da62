"""Registration only: names and lazy targets, so `ork executors` never imports Ray."""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("ray_actor", "ork_executor_ray.actor:RayActorExecutor")
    register("ray_job", "ork_executor_ray.job:RayJobExecutor")


@hookimpl
def ork_register_job_trackers(register: Register) -> None:
    register("ray_job", "ork_executor_ray.tracker:RayJobTracker")
