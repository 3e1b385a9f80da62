"""Registration of the ``bigquery`` executor type, job tracker and ``ork bigquery`` command.

Only names and ``"module:attribute"`` strings live here: plugin discovery imports this
module for every ``ork`` command and must not pay for ``google.cloud.bigquery``.
"""

from __future__ import annotations

from ork import Register, hookimpl

ORK_PLUGIN_API = ">=1,<2"


@hookimpl
def ork_register_executors(register: Register) -> None:
    register("bigquery", "ork_executor_bigquery.executor:BigQueryExecutor")


@hookimpl
def ork_register_job_trackers(register: Register) -> None:
    register("bigquery", "ork_executor_bigquery.tracker:BigQueryJobTracker")


@hookimpl
def ork_register_commands(register: Register) -> None:
    register("bigquery", "ork_executor_bigquery.cli:bigquery")
