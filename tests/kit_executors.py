"""Executors that tests/test_testing_kit.py runs the conformance kit against.

Some behave; each broken one has exactly one flaw the kit must name. They live in an
importable module (not the test file) because the resume check runs them in a child
process, which imports them by ``module:Class``. The deferred ones keep their "external
system" in a folder of JSON files, so the child that submits and the test process that
resumes see the same jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from ork import Context, Deferred, JobStatus, TaskError, executor, load_task_config


class GreeterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greeting: str = "hello"


class GreeterTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    seconds: float = 0.0


class Greeting(BaseModel):
    message: str


@executor(task_config=GreeterTask)
class Greeter:
    """Greets someone after `seconds`; stops waiting as soon as the task is cancelled."""

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        task = load_task_config(GreeterTask, config_file, ctx)
        ctx.log.info("greeting %s", task.name)
        ctx.metrics.record("greetings", 1)
        if ctx.cancel_event.wait(task.seconds):
            raise TaskError("cancelled while waiting")
        return Greeting(message=f"{self.config.greeting} {task.name}")


@executor(task_config=GreeterTask)
class AsyncGreeter:
    """Greets someone after `seconds`, from an ``async def run``."""

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config

    async def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        task = load_task_config(GreeterTask, config_file, ctx)
        await asyncio.sleep(task.seconds)
        return Greeting(message=f"{self.config.greeting} {task.name}")


# --- deferred: jobs kept as JSON files in a folder ------------------------------------------


class FileJobsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs_dir: str


class FileJobTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 0.2
    result: str = "done"


class FileJobOutput(BaseModel):
    result: str


class FileJobStore:
    """The 'external system': one JSON file per submitted job."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _save(self, job: dict[str, Any]) -> None:
        """Atomically: the kit kills ork mid-submit, and a real service would not lose the job."""
        tmp = self.folder / f"{job['id']}.tmp"
        tmp.write_text(json.dumps(job))
        os.replace(tmp, self.folder / f"{job['id']}.json")

    def submit(self, key: str, seconds: float, result: str) -> str:
        job_id = uuid.uuid4().hex[:12]
        job = {"id": job_id, "key": key, "due": time.time() + seconds, "result": result, "cancelled": False}
        self._save(job)
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / f"{job_id}.json").read_text())
        return data

    def find(self, key: str) -> str | None:
        for path in sorted(self.folder.glob("*.json")):
            job = json.loads(path.read_text())
            if job["key"] == key:
                return str(job["id"])
        return None

    def cancel(self, job_id: str) -> None:
        job = self.get(job_id)
        job["cancelled"] = True
        self._save(job)

    def count(self) -> int:
        return len(list(self.folder.glob("*.json")))


def _deferred(job_id: str) -> Deferred:
    return Deferred(tracker="filejobs", handle={"id": job_id}, external_id=job_id)


@executor(task_config=FileJobTask)
class ForgetfulFileJobs:
    """Submits a file job and defers to the tracker, but cannot find its job after a crash."""

    def __init__(self, config: FileJobsConfig) -> None:
        self.store = FileJobStore(config.jobs_dir)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> FileJobOutput | Deferred:
        task = load_task_config(FileJobTask, config_file, ctx)
        return _deferred(self.store.submit(ctx.idempotency_key, task.seconds, task.result))


@executor(task_config=FileJobTask)
class FileJobs(ForgetfulFileJobs):
    """Submits a file job tagged with the idempotency key, so a resumed run adopts it."""

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        job_id = self.store.find(key)
        return None if job_id is None else _deferred(job_id)


class FileJobTracker:
    """Polls file jobs: succeeded once due, failed once cancelled."""

    poll_interval = 1.0

    def __init__(self, executor: ForgetfulFileJobs) -> None:
        self.store = executor.store

    def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        statuses: list[JobStatus | BaseException] = []
        for handle in handles:
            job = self.store.get(handle["id"])
            if job["cancelled"]:
                statuses.append(JobStatus.failed("cancelled"))
            elif time.time() >= job["due"]:
                statuses.append(JobStatus.succeeded({"result": job["result"]}))
            else:
                statuses.append(JobStatus.running())
        return statuses

    def cancel(self, handle: dict[str, Any]) -> None:
        self.store.cancel(handle["id"])


# --- broken, one flaw each -------------------------------------------------------------------


@executor(task_config=GreeterTask)
class Stubborn:
    """Sleeps through cancellation: ignores ctx.cancel_event and has no cancel()."""

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        task = load_task_config(GreeterTask, config_file, ctx)
        time.sleep(task.seconds)
        return Greeting(message=task.name)


class DriftingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1"

    @field_validator("url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value + "/"  # not idempotent: every re-read adds another slash


@executor(task_config=GreeterTask)
class Drifting:
    """Its config changes each time it is validated."""

    def __init__(self, config: DriftingConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        return Greeting(message="hi")


class LooseConfig(BaseModel):
    greeting: str = "hello"


@executor(task_config=GreeterTask)
class Loose:
    """Its config silently ignores unknown keys."""

    def __init__(self, config: LooseConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        return Greeting(message="hi")


@executor(task_config=GreeterTask)
class WrongOutput:
    """Declares a Greeting but returns something else."""

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        return {"msg": "hi"}  # type: ignore[return-value]


@executor(task_config=GreeterTask)
class Undocumented:
    def __init__(self, config: GreeterConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        return Greeting(message="hi")


class Undecorated:
    """Has the shape, but was never checked by @executor."""

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Greeting:
        return Greeting(message="hi")


@executor(task_config=FileJobTask)
class Clingy(FileJobs):
    """Adopts a job even for a key it never submitted with."""

    def adopt(self, key: str, ctx: Context) -> Deferred | None:
        return _deferred("0" * 12)
