{%- set P = cookiecutter.__class_prefix -%}
{%- set NAME = cookiecutter.executor_name -%}
{%- if cookiecutter.kind == "sync" -%}
"""The {{ NAME }} executor: what ork calls to run a task whose workflow says ``executor: {{ NAME }}``.

Three pydantic models sit at the edges, and ork validates each one there:

- `{{ P }}Config`: executor-wide settings from ork.yaml (``executors.<name>.config``),
  validated once when ork creates the executor, so a typo fails before any task runs;
- `{{ P }}Task`: the keys a task writes in the workflow; ``ork validate`` checks them,
  and `run` reads them with `load_task_config` (which also merges the task's ``config_file``);
- `{{ P }}Output`: what a task returns; ork validates it, stores it as JSON, and later
  tasks bind to its fields with ``{ref: tasks.<task>.output.<field>}``.

The body of `run` is a placeholder: replace it with calls to your system, keep the shape.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ork import Context, TaskError, executor, load_task_config


class {{ P }}Config(BaseModel):
    """Executor-wide settings: ``executors.<name>.config`` in ork.yaml."""

    # forbid unknown keys, so a misspelled setting is an error that names it, not ignored
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", description="Put before every text (stands in for a URL, a project, credentials).")


class {{ P }}Task(BaseModel):
    """The keys a task with ``executor: {{ NAME }}`` writes in the workflow."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="The text to process.")
    repeat: int = Field(default=1, ge=1, le=100, description="How many times to repeat it.")
    delay: float = Field(default=0.0, ge=0, description="Seconds to wait first: stands in for slow work that can be cancelled.")


class {{ P }}Output(BaseModel):
    """A task's result; downstream tasks bind to ``text`` and ``length``."""

    text: str
    length: int


@executor(task_config={{ P }}Task)
class {{ P }}Executor:
    """{{ cookiecutter.description }}

    Each task gives a ``message`` (and optionally ``repeat`` and ``delay``); the output has the
    processed ``text`` and its ``length``. ``ork executors show {{ NAME }}`` prints this text.
    """

    def __init__(self, config: {{ P }}Config) -> None:
        # Called once per run, before the first task: open clients and connections here.
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> {{ P }}Output:
        """Run one task attempt. A sync run() runs in a worker thread, so it may block."""
        task = load_task_config({{ P }}Task, config_file, ctx)
        ctx.log.info("processing %r", task.message)
        # ork cannot interrupt a thread: wait on ctx.cancel_event (set on timeout or cancel)
        # instead of time.sleep, and return as soon as it is set.
        if ctx.cancel_event.wait(task.delay):
            raise TaskError("cancelled before the work started")
        text = " ".join([task.message] * task.repeat)
        if self.config.prefix:
            text = f"{self.config.prefix} {text}"
        ctx.metrics.record("{{ NAME|replace('-', '_') }}_characters", len(text))
        return {{ P }}Output(text=text, length=len(text))

    def cancel(self, ctx: Context) -> None:
        """Called (in a thread) when the task times out or the run is cancelled.

        Stop remote work here: cancel the request, the query, the job. Optional: ork also
        sets ``ctx.cancel_event``, which is all this placeholder needs.
        """
        ctx.log.info("cancel requested")

    def close(self) -> None:
        """Called once when the run ends: close clients and connections. Optional."""
{%- else -%}
"""The {{ NAME }} executor: submits a job to {{ P }}'s job API and hands it over to ork.

Three pydantic models sit at the edges, and ork validates each one there:

- `{{ P }}Config`: executor-wide settings from ork.yaml (``executors.<name>.config``),
  validated once when ork creates the executor, so a typo fails before any task runs;
- `{{ P }}Task`: the keys a task writes in the workflow; ``ork validate`` checks them,
  and `run` reads them with `load_task_config` (which also merges the task's ``config_file``);
- `{{ P }}Output`: what a finished job returns; ork validates it, stores it as JSON, and
  later tasks bind to its fields with ``{ref: tasks.<task>.output.<field>}``.

`run` does not wait for the job: it submits it and returns ``Deferred``. ork commits the
handle, and the job tracker (tracker.py) polls the job until it ends, so a thousand jobs
cost one process. If ork dies after the submit but before that commit, ``ork resume``
calls `adopt` with the same idempotency key, which finds the job instead of submitting
it twice. `client.py` is a placeholder for your system's API: replace it, keep the shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ork import Context, Deferred, TaskError, executor, load_task_config
from {{ cookiecutter.__package_name }}.client import {{ P }}APIError, {{ P }}Client

TRACKER = "{{ NAME }}"
"""The job tracker's registered name (see plugin.py)."""


class {{ P }}Config(BaseModel):
    """Executor-wide settings: ``executors.<name>.config`` in ork.yaml."""

    # forbid unknown keys, so a misspelled setting is an error that names it, not ignored
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of the job API, e.g. https://jobs.example.com/api.")
    token: str | None = Field(
        default=None, repr=False, description="Bearer token; write ${{ '{' }}{{ cookiecutter.__env_prefix }}_TOKEN{{ '}' }} in ork.yaml to keep it out of the file."
    )
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for one API call.")
    poll_interval: float = Field(default=5.0, gt=0, description="Seconds between status checks of running jobs.")


class {{ P }}Task(BaseModel):
    """The keys a task with ``executor: {{ NAME }}`` writes in the workflow."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(description="The kind of job to run.")
    params: dict[str, Any] = Field(default_factory=dict, description="The job's parameters, passed through as JSON.")


class {{ P }}Output(BaseModel):
    """A finished job; downstream tasks bind to ``job_id`` and ``result``."""

    job_id: str
    result: dict[str, Any]


def deferred(client: {{ P }}Client, job_id: str) -> Deferred:
    """The handle ork stores for a job: everything the tracker needs, as JSON."""
    return Deferred(tracker=TRACKER, handle={"job_id": job_id}, link=client.job_url(job_id), external_id=job_id)


@executor(task_config={{ P }}Task)
class {{ P }}Executor:
    """{{ cookiecutter.description }}

    Each task names a ``job`` and its ``params``; ork waits for the job without holding a
    thread, and the output has the ``job_id`` and the job's ``result``.
    ``ork executors show {{ NAME }}`` prints this text.
    """

    def __init__(self, config: {{ P }}Config) -> None:
        # Called once per run, before the first task; the tracker reuses this client.
        self.config = config
        self.client = {{ P }}Client(config.url, token=config.token, timeout=config.request_timeout)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> {{ P }}Output | Deferred:
        """Submit the job, tagged with ctx.idempotency_key, and hand it to the tracker."""
        task = load_task_config({{ P }}Task, config_file, ctx)
        try:
            job = self.client.submit(task.job, task.params, idempotency_key=ctx.idempotency_key)
        except {{ P }}APIError as exc:
            raise TaskError(f"submitting {task.job!r} failed: {exc}") from None
        ctx.log.info("submitted job %s (%s)", job["id"], self.client.job_url(job["id"]))
        return deferred(self.client, job["id"])

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        """On ``ork resume``: the job an interrupted attempt submitted with `key`, or None.

        The key is the same across a crash and changes with each real retry, so finding a
        job by it never adopts the job of an attempt that failed.
        """
        job = self.client.find(idempotency_key=key)
        if job is None:
            return None
        return deferred(self.client, job["id"])

    def close(self) -> None:
        """Called once when the run ends. Optional."""
{%- endif %}
