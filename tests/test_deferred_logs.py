"""A job tracker's ``JobStatus.log`` lines land in the task's log, in order, on every poll."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ork import Context, Deferred, JobStatus, executor
from ork.testing import run_task

_polls: dict[str, int] = {}


class NoConfig(BaseModel):
    pass


@executor
class PrintingJobExecutor:
    """Hands over a job whose tracker reports two lines per poll."""

    def __init__(self, config: NoConfig) -> None:
        pass

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Deferred:
        _polls[ctx.idempotency_key] = 0
        return Deferred("printing", {"key": ctx.idempotency_key})


class PrintingTracker:
    poll_interval = 0.01

    def __init__(self, executor: PrintingJobExecutor) -> None:
        pass

    def poll(self, handles: list[dict[str, Any]]) -> list[JobStatus | BaseException]:
        out: list[JobStatus | BaseException] = []
        for handle in handles:
            n = _polls[handle["key"]] = _polls[handle["key"]] + 1
            lines = (f"poll {n} a", f"poll {n} b")
            out.append(JobStatus.succeeded({"polls": n}, log=lines) if n == 3 else JobStatus.running(log=lines))
        return out


def test_tracker_log_lines_are_added_to_the_task_log() -> None:
    result = run_task(PrintingJobExecutor, trackers={"printing": PrintingTracker}, poll_interval=0.01)
    assert result.ok, result.describe()
    job_lines = [line for line in result.logs if line.startswith("poll ")]
    assert job_lines == ["poll 1 a", "poll 1 b", "poll 2 a", "poll 2 b", "poll 3 a", "poll 3 b"], result.logs
