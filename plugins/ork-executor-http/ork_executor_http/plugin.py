"""Registration only: names and lazy targets, so listing executors never imports httpx."""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("http", "ork_executor_http.executors:HttpExecutor")
    register("http_async", "ork_executor_http.executors:HttpAsyncExecutor")


@hookimpl
def ork_register_job_trackers(register: Register) -> None:
    register("http_async", "ork_executor_http.tracker:HttpJobTracker")
