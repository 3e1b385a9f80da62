"""``ray_job``: a task submits a Ray Job and hands it to ork as a `Deferred`.

The job's ``submission_id`` is the task's idempotency key. That is what makes it safe: Ray
refuses a second job with the same id, `adopt` finds the job by it after ork was killed
between the submission and the commit of its handle, and so ``ork resume`` follows the job
that exists, or submits it when it never arrived, and never starts a second one. Nothing
here waits for the job; the tracker (`ork_executor_ray.tracker`) polls it and copies its logs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ork import Context, Deferred, KickoffUncertain, PathError, Problem, TaskError, executor, load_task_config

from ork_executor_ray.config import RayJobConfig, RayJobOutput, RayJobTask

if TYPE_CHECKING:
    from ork import TaskWhere

TRACKER = "ray_job"


def submission_id(key: str) -> str:
    """The Ray submission id of the job a task's try submits (the key is already a valid one)."""
    return key


def job_info(client: Any, sid: str) -> Any | None:
    """The job's info, or None when the cluster has no job with that submission id."""
    try:
        return client.get_job_info(sid)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            return None
        raise TaskError(f"cannot read Ray job {sid}: {str(exc).splitlines()[0]}") from None


def make_client(url: str) -> Any:
    from ork_executor_ray.connection import import_ray

    import_ray()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TaskError(f"cannot reach the Ray Job Submission API at {url}: {str(exc).splitlines()[0]}") from None


@executor(task_config=RayJobTask)
class RayJobExecutor:
    """Submits the task's ``entrypoint`` as a Ray Job and waits for it without holding a worker.

    ``runtime_env`` (``working_dir`` beside the workflow is uploaded, ``pip``, ``env_vars`` …),
    ``entrypoint_num_cpus``/``_gpus``/``_resources`` and ``metadata`` go to Ray as they are. The
    job's submission id is the task's idempotency key, so a resumed run follows the same job
    and a retry submits a new one. Its logs are copied into the task's log as they grow; a
    timeout or a cancel stops the job; a restart of ork leaves it running.
    """

    def __init__(self, config: RayJobConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client: Any = None

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.config.dashboard_url)
            return self._client

    @staticmethod
    def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the keys, and that a local ``runtime_env.working_dir`` is a folder."""
        settings, problems = where.task_config(RayJobTask)
        if settings is None:
            return problems
        working_dir = (settings.runtime_env or {}).get("working_dir")
        if isinstance(working_dir, str) and "://" not in working_dir and "{" not in working_dir:
            try:
                where.resolve_path(working_dir, field="runtime_env.working_dir", must_exist="dir")
            except PathError as exc:
                problems.append(where.problem("runtime_env.working_dir", exc.reason))
        return problems

    def _runtime_env(self, task: RayJobTask, ctx: Context) -> dict[str, Any] | None:
        env = {**(self.config.runtime_env or {}), **(task.runtime_env or {})}
        working_dir = env.get("working_dir")
        if isinstance(working_dir, str) and "://" not in working_dir:
            env["working_dir"] = str(
                ctx.resolve_path(working_dir, field=f"tasks.{ctx.task_name}.runtime_env.working_dir", must_exist="dir")
            )
        return env or None

    def deferred(self, sid: str) -> Deferred:
        url = self.config.dashboard_url
        return Deferred(TRACKER, {"dashboard_url": url, "submission_id": sid}, link=f"{url}/#/jobs/{sid}", external_id=sid)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Deferred:
        task = load_task_config(RayJobTask, config_file, ctx)
        sid = submission_id(ctx.idempotency_key)
        client = self.client()
        if job_info(client, sid) is not None:  # a try that was submitted already: never a second job
            ctx.log.info("Ray job %s exists already; following it instead of submitting again", sid)
            return self.deferred(sid)
        metadata = {**self.config.metadata, **task.metadata,
                    "ork_run_id": ctx.run_id, "ork_task": ctx.task_name, "ork_key": ctx.idempotency_key}
        try:
            client.submit_job(
                entrypoint=task.entrypoint, submission_id=sid, runtime_env=self._runtime_env(task, ctx),
                metadata=metadata, entrypoint_num_cpus=task.entrypoint_num_cpus,
                entrypoint_num_gpus=task.entrypoint_num_gpus, entrypoint_resources=task.entrypoint_resources,
            )
        except Exception as exc:  # noqa: BLE001 - judged below: maybe it arrived after all
            if job_info(client, sid) is not None:
                ctx.log.info("Ray job %s was submitted (its answer was an error: %s)", sid, _first_line(exc))
                return self.deferred(sid)
            raise _submit_error(exc, sid) from None
        ctx.log.info("submitted Ray job %s: %s", sid, task.entrypoint)
        return self.deferred(sid)

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        """The job an interrupted try submitted, found by its submission id; None if it never arrived."""
        sid = submission_id(key)
        if job_info(self.client(), sid) is None:
            return None
        ctx.log.info("adopting Ray job %s, submitted before ork restarted", sid)
        return self.deferred(sid)


def output_of(info: Any, sid: str) -> dict[str, Any]:
    return RayJobOutput(
        submission_id=sid, status=str(getattr(info.status, "value", info.status)), message=info.message,
        driver_exit_code=getattr(info, "driver_exit_code", None), start_time=info.start_time, end_time=info.end_time,
    ).model_dump()


def _submit_error(exc: BaseException, sid: str) -> TaskError:
    """An uncertain kickoff for answers that may hide a created job, a plain failure otherwise."""
    import requests

    text = _first_line(exc)
    if isinstance(exc, (requests.exceptions.ReadTimeout, requests.exceptions.ChunkedEncodingError)) or any(
        f"status code {code}" in str(exc) for code in (502, 503, 504)
    ):
        return KickoffUncertain(f"submitting Ray job {sid}: no clear answer ({text})")
    return TaskError(f"submitting Ray job {sid} failed: {text}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
