"""``ray_actor``: the python executor's tasks, run on a pool of warm Ray actors.

The task keys, their validation, the binding of ``inputs`` and the calling of the function
are the python executor's (`ork_core.python_executor`, and its ``isolation: process`` request
and child), so a task moves between ``python`` and ``ray_actor`` by changing ``executor:``.
What differs is where the function runs: in an actor that stays warm for the whole run, on
whatever machine of the cluster Ray picks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ork import Context, Problem, TaskError, TaskSkipped, executor, load_task_config
from ork_core.bindings import resolve
from ork_core.python_isolated import _Replies, _request

from ork_executor_ray import connection
from ork_executor_ray.config import RayActorConfig, RayActorTask
from ork_executor_ray.pool import ActorPool

if TYPE_CHECKING:
    from ork import TaskWhere

WAIT_STEP = 0.25
"""Seconds between looks at ``ctx.cancel_event`` while a task runs on its actor."""


@dataclass(eq=False)
class _Call:
    """One task on one actor; stopping it is decided once, by `run` or by `cancel`."""

    pool: ActorPool
    actor: Any
    ref: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False
    discarded: bool = False

    def discard(self) -> None:
        with self.lock:
            if self.discarded:
                return
            self.discarded = True
        self.pool.discard(self.actor)


@executor(task_config=RayActorTask)
class RayActorExecutor:
    """Runs a Python function (``file``/``module`` + ``function`` + ``inputs``) on a pool of warm Ray actors.

    The pool has ``num_actors`` actors, created on the first task and killed when the run
    ends. The return value is the task's output; an exception fails the task with its
    message, and its remote traceback is in the task's log. On a timeout or cancel the Ray
    task is cancelled, and its actor is killed (and replaced) if the function does not end
    within ``cancel_grace`` seconds. An actor that dies fails its task, which ork retries
    (``retries:``) on a fresh actor.
    """

    def __init__(self, config: RayActorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._pools: dict[str, ActorPool] = {}
        self._calls: dict[int, _Call] = {}
        self._ray: Any = None
        self._closed = False

    @staticmethod
    def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the task's keys, and that its file defines the function (nothing is imported)."""
        from ork_core.python_executor import _judge

        settings, problems = where.task_config(RayActorTask, merge_config_file=False)
        if settings is None:
            return problems
        return problems + [where.problem(key, message) for key, message in _judge(settings, where)]

    def _connect(self) -> Any:
        with self._lock:
            if self._closed:
                raise TaskError("the ray_actor executor is closed")
            if self._ray is None:
                ray = connection.acquire(self.config.address, self.config.namespace)
                from ray import cloudpickle

                import ork_core._isolated_child
                import ork_executor_ray.worker

                # by value: the cluster's workers need neither ork nor this plugin installed
                by_value: Any = cloudpickle.register_pickle_by_value
                by_value(ork_core._isolated_child)
                by_value(ork_executor_ray.worker)
                self._ray = ray
            return self._ray

    def _pool(self, task: RayActorTask) -> ActorPool:
        ray = self._connect()
        overrides = task.overrides()
        key = json.dumps(overrides, sort_keys=True, default=str)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                from ork_executor_ray.worker import TaskWorker

                options: dict[str, Any] = {"max_concurrency": 1, "max_restarts": 0}
                for name in ("num_cpus", "num_gpus", "resources", "runtime_env"):
                    value = overrides.get(name, getattr(self.config, name))
                    if value is not None:
                        options[name] = value
                remote = ray.remote(TaskWorker)

                def create() -> Any:
                    try:
                        return remote.options(**options).remote()
                    except Exception as exc:  # noqa: BLE001 - Ray checks options (a runtime_env) here
                        shown = {k: v for k, v in options.items() if k not in ("max_concurrency", "max_restarts")}
                        raise TaskError(f"cannot start a Ray actor with {shown}: {_first_line(exc)}") from None

                pool = ActorPool(create, self.config.num_actors, self._kill)
                self._pools[key] = pool
            return pool

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or the cluster is gone: nothing left to end
            pass

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:
        task = load_task_config(RayActorTask, "", ctx)  # config_file is the function's own, not task keys
        inputs = resolve(task.inputs, ctx.params, upstream)
        request = json.loads(_request(task, inputs, ctx, upstream))
        label = f"{task.module or task.file}:{task.function}"
        pool = self._pool(task)
        actor = pool.acquire(ctx.cancel_event)
        call = _Call(pool, actor, actor.call.remote(request))
        with self._lock:
            self._calls[id(ctx)] = call
        try:
            reply = self._wait(call, ctx, label)
        finally:
            with self._lock:
                self._calls.pop(id(ctx), None)
            if not call.discarded:
                pool.release(actor)
        return _outcome(reply, ctx, label)

    def _wait(self, call: _Call, ctx: Context, label: str) -> dict[str, Any]:
        ray = self._ray
        from ray.exceptions import GetTimeoutError, RayActorError, TaskCancelledError

        while True:
            if ctx.cancel_event.is_set():
                self._stop(call)
                raise TaskError("cancelled (the Ray task was cancelled)")
            try:
                reply: dict[str, Any] = ray.get(call.ref, timeout=WAIT_STEP)
                return reply
            except GetTimeoutError:
                continue
            except TaskCancelledError:
                raise TaskError("cancelled (the Ray task was cancelled)") from None
            except RayActorError as exc:
                call.discard()
                raise TaskError(f"{label}: the Ray actor running it died: {_first_line(exc)}") from None

    def _stop(self, call: _Call) -> None:
        """``ray.cancel`` the task; kill its actor if it is still running after the grace."""
        with call.lock:
            if call.stopped:
                return
            call.stopped = True
        ray = self._ray
        try:
            ray.cancel(call.ref)
        except Exception:  # noqa: BLE001 - the task already ended
            pass
        ready, _ = ray.wait([call.ref], timeout=self.config.cancel_grace)
        if not ready:
            call.discard()

    def cancel(self, ctx: Context) -> None:
        """Stop the task's Ray task before ork marks the task ended (a timeout or a cancel)."""
        with self._lock:
            call = self._calls.get(id(ctx))
        if call is not None and self._ray is not None:
            self._stop(call)

    def close(self) -> None:
        """Kill every actor of the pools and disconnect (ending a ``local`` cluster)."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
            ray, self._ray = self._ray, None
        if ray is None:
            return
        self._ray = ray  # `_kill` needs it while the pools close
        try:
            for pool in pools:
                pool.close()
        finally:
            self._ray = None
            connection.release()


def _outcome(reply: Mapping[str, Any], ctx: Context, label: str) -> Any:
    """Replay what the function logged into the task's log; return its result or raise its error."""
    replies = _Replies(ctx)
    replies.lines("channel", str(reply.get("messages", "")).encode().splitlines())
    err = replies.error
    if err is not None:
        if err.get("error") == "skipped":
            raise TaskSkipped(err.get("message") or "")
        if err.get("error") == "task_error":
            raise TaskError(str(err.get("message")))
        if err.get("traceback"):
            ctx.log.error("%s", f"remote traceback (Ray actor, pid {reply.get('pid')}):\n{str(err['traceback']).rstrip()}")
        message = f": {err.get('message')}" if err.get("message") else ""
        raise TaskError(f"{label} raised {err.get('type')}{message}")
    if not replies.has_result:
        raise TaskError(f"{label}: the Ray actor returned no result")
    return replies.result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
