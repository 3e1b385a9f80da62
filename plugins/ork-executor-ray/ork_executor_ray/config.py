"""The settings of the Ray executors (``ork.yaml``) and of their tasks (the workflow)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ork_core.python_executor import PythonTask


def _address(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("give 'auto' (the cluster this machine belongs to), 'local' (a throwaway one), "
                         "'ray://host:10001' or 'host:6379'")
    return value


class Resources(BaseModel):
    """What each actor of a pool asks Ray for; a task may ask for other amounts."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float | None = Field(None, ge=0)
    """CPUs per actor (Ray's default for an actor: 1 to place it, 0 while it runs)."""
    num_gpus: float | None = Field(None, ge=0)
    resources: dict[str, float] | None = None
    """Custom resources per actor, e.g. ``{accelerator_a100: 1}``."""
    runtime_env: dict[str, Any] | None = None
    """A Ray runtime environment (``pip``, ``env_vars``, ``working_dir`` …) for the actors."""


class RayActorConfig(Resources):
    """``type: ray_actor``: where the cluster is and how large the pool of warm actors is."""

    address: str = "auto"
    """``auto`` (``RAY_ADDRESS`` or the cluster started on this machine), ``local`` (a throwaway
    cluster inside ork, ended with the run), ``ray://host:10001`` or ``host:6379``."""
    namespace: str | None = None
    """The Ray namespace of ork's driver and actors."""
    num_actors: int = Field(2, ge=1, le=10_000)
    """Actors in the pool: at most this many tasks of the executor run at once."""
    cancel_grace: float = Field(2.0, ge=0)
    """Seconds a cancelled task (timeout, Ctrl-C) gets to end after ``ray.cancel`` before its
    actor is killed: a running function of a thread-based actor cannot be interrupted."""

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _address(value)


class RayActorTask(PythonTask, Resources):
    """A python task's keys (``file``/``module``, ``function``, ``inputs``) plus per-task Ray resources.

    A task that asks for other resources or another runtime environment than its executor's
    gets its own pool of ``num_actors`` actors with those settings.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_local_interpreter(self) -> RayActorTask:
        for key in ("isolation", "python"):
            if getattr(self, key) is not None:
                raise ValueError(
                    f"'{key}' is a key of the python executor; a ray_actor task runs on the cluster's "
                    "interpreter (choose its packages with runtime_env)"
                )
        return self

    def overrides(self) -> dict[str, Any]:
        """The actor options this task sets itself, so tasks that set the same share a pool."""
        return {k: getattr(self, k) for k in Resources.model_fields if getattr(self, k) is not None}


class RayJobConfig(BaseModel):
    """``type: ray_job``: the Job Submission API of a cluster, and defaults for every job."""

    model_config = ConfigDict(extra="forbid")

    dashboard_url: str
    """The cluster's dashboard, which serves the Job Submission API: ``http://127.0.0.1:8265``."""
    runtime_env: dict[str, Any] | None = None
    """Default runtime environment of the jobs; a task's ``runtime_env`` keys replace these keys."""
    metadata: dict[str, str] = {}
    """Metadata added to every job (ork adds ``ork_run_id``, ``ork_task`` and ``ork_key``)."""
    poll_interval: float = Field(2.0, gt=0)
    """Seconds between status polls of a job (and copies of its new log lines)."""

    @field_validator("dashboard_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not a URL: give the dashboard's http:// address, such as http://127.0.0.1:8265")
        return value


class RayJobTask(BaseModel):
    """The keys of a ``ray_job`` task: what to run and what it may use."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: str
    """The shell command of the job's driver, e.g. ``python train.py --epochs 3``."""
    runtime_env: dict[str, Any] | None = None
    """``working_dir`` (a folder beside the workflow, uploaded), ``pip``, ``env_vars`` …"""
    entrypoint_num_cpus: float | None = Field(None, ge=0)
    entrypoint_num_gpus: float | None = Field(None, ge=0)
    entrypoint_resources: dict[str, float] | None = None
    metadata: dict[str, str] = {}

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give the command the job runs, such as 'python train.py'")
        return value


class RayJobOutput(BaseModel):
    """What a finished Ray Job leaves as the task's output."""

    submission_id: str
    status: str
    message: str | None = None
    driver_exit_code: int | None = None
    start_time: int | None = None
    end_time: int | None = None
