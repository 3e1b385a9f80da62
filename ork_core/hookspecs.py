"""The hook specifications: the whole contract between ork and its plugins.

Every hook is called with keyword arguments only, so an implementation may accept any
subset of the arguments listed here (pluggy's opt-in arguments); specs grow by adding
arguments, never by changing the meaning of one. `docs/hooks.md` documents each hook and a
test fails if one is missing there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ork_core.context import Context
    from ork_core.registry import Register

PROJECT_NAME = "ork"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration: called once per plugin manager, right after plugins load -------------


@hookspec
def ork_register_executors(register: Register) -> None:
    """Register the executor types this plugin brings.

    Call ``register(name, target)`` once per type. ``target`` is the executor class or,
    better, a lazy ``"module:Class"`` string: the module is imported the first time a
    workflow uses the type, so listing executors never pays for heavy imports.

    :param register: callable ``register(name: str, target: type | str) -> None``.
    """


@hookspec
def ork_register_job_trackers(register: Register) -> None:
    """Register the job trackers this plugin brings (see ``docs/deferred.md``).

    A tracker polls external jobs that an executor handed over with ``Deferred``. Call
    ``register(name, target)`` with the name an executor puts in ``Deferred(tracker=name)``.

    :param register: callable ``register(name: str, target: type | str) -> None``.
    """


@hookspec
def ork_register_storage(register: Register) -> None:
    """Register storage backends, one per URL scheme (``sqlite``, ``postgresql`` …).

    :param register: callable ``register(scheme: str, target: type | str) -> None``;
        the target is a ``Storage`` class constructed with the URL.
    """


@hookspec
def ork_register_commands(register: Register) -> None:
    """Register extra ``ork`` subcommands (``ork bigquery estimate`` …).

    Call ``register(name, "module:command")`` with a lazy target naming a ``click.Command``
    (or group); the module is imported only when that subcommand is invoked.

    :param register: callable ``register(name: str, target: str) -> None``.
    """


# --- executor lifecycle -------------------------------------------------------------------


@hookspec
def ork_executor_created(name: str, executor: object, config: BaseModel) -> None:
    """Called once after an executor instance is created, before its first task runs.

    :param name: the executor's name in ``ork.yaml`` (or its type name when used directly).
    :param executor: the new instance.
    :param config: its validated configuration model.
    """


@hookspec
def ork_executor_closed(name: str, executor: object) -> None:
    """Called once after an executor instance was closed at the end of a run.

    :param name: the executor's name.
    :param executor: the instance, already closed.
    """


# --- run and task lifecycle ---------------------------------------------------------------


@hookspec
def ork_run_started(run_id: str, workflow_name: str, params: dict[str, Any], resumed: bool) -> None:
    """Called when a run starts executing tasks, and again each time it is resumed.

    :param run_id: the run's id.
    :param workflow_name: the workflow's ``name``.
    :param params: the run parameters.
    :param resumed: True when ``ork resume`` continues the run.
    """


@hookspec
def ork_run_finished(run_id: str, workflow_name: str, status: str) -> None:
    """Called once when a run reaches a final status (``success``, ``failed``, ``cancelled``).

    :param run_id: the run's id.
    :param workflow_name: the workflow's ``name``.
    :param status: the run's final status.
    """


@hookspec(firstresult=True)
def ork_task_run(ctx: Context, executor: object, config_file: str, upstream: dict[str, Any]) -> Any:
    """Runs one attempt of a task and returns what the executor's ``run`` returned.

    ork's own implementation calls the executor; plugins wrap it with
    ``@hookimpl(wrapper=True)`` to time, trace or veto the attempt (raise before ``yield``
    to fail the attempt with that error). Stops at the first non-None result. Called in a
    worker thread whenever a plugin implements it, so a wrapper may block.

    :param ctx: the task's context (names, attempt, log, metrics).
    :param executor: the executor instance that runs the task.
    :param config_file: the task's ``config_file`` as an absolute path ("" when none).
    :param upstream: outputs of the task's dependencies, by task name.
    """


@hookspec
def ork_task_status_changed(
    run_id: str, workflow_name: str, task_name: str, attempt: int, status: str, previous: str, error: str | None
) -> None:
    """Called after each task status change was committed to storage.

    :param run_id: the run's id.
    :param workflow_name: the workflow's ``name``.
    :param task_name: the task.
    :param attempt: the attempt number, from 1.
    :param status: the new status (``queued``, ``running``, ``deferred``, ``retrying``,
        ``success``, ``failed``, ``skipped``, ``upstream_failed``, ``cancelled``).
    :param previous: the status before.
    :param error: the error message for failed statuses, else None; as stored: secrets
        masked, cut to 64 Ki characters.
    """

