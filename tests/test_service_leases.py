"""`ork scheduler`'s leases, in this process: a run whose lease another scheduler took is abandoned, silently.

(The real processes, killed and racing, are in test_schedule_service.py and the PostgreSQL
plugin's test_several_schedulers.py; this is the moment those cannot time: a scheduler that
was paused past its lease wakes up to find its run taken.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orkhelpers import write

from ork_core.ownership import Owner
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import STOPPED, coerce_params, create_run
from ork_core.service import Service
from ork_core.storage import open_storage
from ork_core.storage.base import Storage
from ork_core.workflow import load_workflow

TASKS = """
import time
from pathlib import Path

def quick() -> int:
    return 1

def gate() -> int:
    while not (Path(__file__).parent / "go").exists():
        time.sleep(0.02)
    return 2
"""


@dataclass
class QueuedRun:
    """A project with one workflow, a run of it queued, and two connections to its database."""

    project: Project
    plugins: Any
    flow: Path
    storage: Storage
    other: Storage
    """Another connection: what every other process sees."""
    run_id: str


def queued_run(tmp_path: Path, workflow: str, tasks: str = TASKS) -> QueuedRun:
    write(tmp_path / "tasks.py", tasks)
    write(tmp_path / "ork.yaml", "{}\n")
    flow = write(tmp_path / "w.yaml", workflow)
    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
    project = Project.load(tmp_path, pm)
    compiled = load_workflow(flow, project)
    url = f"sqlite:///{tmp_path / '.ork' / 'ork.db'}"
    storage, other = open_storage(url, pm.registry), open_storage(url, pm.registry)
    run_id = create_run(storage, compiled, coerce_params(compiled, {}), queued=True)
    return QueuedRun(project, pm, flow, storage, other, run_id)


def test_a_run_whose_lease_was_taken_is_abandoned_without_another_write(tmp_path: Path) -> None:
    q = queued_run(tmp_path, """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
          b: {file: tasks.py, function: gate, depends_on: [a]}
        """)
    project, pm, flow, storage, other, run_id = q.project, q.plugins, q.flow, q.storage, q.other, q.run_id
    writes: list[Any] = []
    real_write = storage.write

    def spy(*args: Any, **kwargs: Any) -> None:
        writes.append(args)
        real_write(*args, **kwargs)

    storage.write = spy  # type: ignore[method-assign]

    async def main() -> Any:
        service = Service(project=project, plugins=pm, storage=storage, paths=[flow], lease=0.3, log=lambda line: None)
        service.start_runs()
        assert list(service.active) == [run_id]
        while other.get_run(run_id).tasks["b"].status != "running":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # paused past its lease: no pass renewed it
        assert [r.id for r in other.claim_runs("elsewhere/1/b:1", 30.0)] == [run_id]
        before = len(writes)
        service.renew_leases()
        result = await asyncio.wait_for(service.active[run_id].task, 10)
        return result, before

    try:
        result, before = asyncio.run(main())
        assert result.status == STOPPED
        assert writes[before:] == []  # not the "stopped", not a log line: the run is another's
        run = other.get_run(run_id)
        assert run.owner == "elsewhere/1/b:1" and run.status == "running"
        assert (run.tasks["a"].status, run.tasks["b"].status) == ("success", "running")
    finally:
        (tmp_path / "go").touch()  # the given-up thread ends
        storage.close()
        other.close()


def test_a_step_of_a_scheduler_paused_past_its_lease_is_fenced_off(tmp_path: Path) -> None:
    """Its task ends before its next renewal could tell it: the commit itself is refused, and the run abandoned."""
    q = queued_run(tmp_path, """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
          b: {file: tasks.py, function: gate, depends_on: [a]}
        """)
    project, pm, flow, storage, other, run_id = q.project, q.plugins, q.flow, q.storage, q.other, q.run_id
    logged: list[str] = []

    async def main() -> Any:
        service = Service(project=project, plugins=pm, storage=storage, paths=[flow], lease=0.3, log=logged.append)
        service.start_runs()
        while other.get_run(run_id).tasks["b"].status != "running":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        assert [r.id for r in other.claim_runs("elsewhere/1/b:1", 30.0)] == [run_id]
        (tmp_path / "go").touch()  # b ends; its success is the next commit, before any renewal
        return await asyncio.wait_for(service.active[run_id].task, 10)

    try:
        result = asyncio.run(main())
        assert result.status == STOPPED
        run = other.get_run(run_id)
        assert run.owner == "elsewhere/1/b:1" and run.status == "running"
        assert run.tasks["b"].status == "running"  # not the success it found: the new owner decides
        assert any("another process took it over" in line for line in logged), logged
    finally:
        (tmp_path / "go").touch()
        storage.close()
        other.close()


def test_a_run_taken_from_a_dead_owner_of_this_host_is_leased_by_the_claim_itself(tmp_path: Path) -> None:
    """Killed between that claim and a renewal, the scheduler must leave a run others can adopt after the lease.

    A claim without a lease is checked only on its own host (is the pid alive?): to a scheduler
    on any other host the run would be held forever. (Seen in test_chaos.py's kind of run.)
    """
    q = queued_run(tmp_path, """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
        """)
    project, pm, flow, storage, other, run_id = q.project, q.plugins, q.flow, q.storage, q.other, q.run_id
    dead = Owner(Owner.current().host, 2**22 + 12345, "gone:1").token
    assert storage.claim_run(run_id, dead, expected=None) == dead  # a scheduler of this host, killed
    seen: list[tuple[str | None, float | None]] = []
    real_claim = storage.claim_run

    def spy(*args: Any, **kwargs: Any) -> str | None:
        found = real_claim(*args, **kwargs)
        run = other.get_run(run_id)  # what every other process sees at that moment
        seen.append((run.owner, run.lease_until))
        return found

    storage.claim_run = spy  # type: ignore[method-assign]

    async def main() -> Any:
        service = Service(project=project, plugins=pm, storage=storage, paths=[flow], lease=30.0, log=lambda line: None)
        service.start_runs()
        return await asyncio.wait_for(service.active[run_id].task, 10)

    try:
        before = time.time()
        result = asyncio.run(main())
        assert result.status == "success"
        owner, lease_until = seen[0]  # the takeover; Scheduler.run's own claim comes after
        assert owner == Owner.current().token and lease_until is not None and lease_until > before + 20
    finally:
        storage.close()
        other.close()


def test_a_scheduler_whose_step_was_fenced_off_starts_none_of_the_tasks_that_step_made_ready(tmp_path: Path) -> None:
    """The refused commit said c was running: c is the new owner's to start, so this process must not run it too."""
    q = queued_run(tmp_path, """
        name: w
        tasks:
          a: {file: tasks.py, function: quick}
          b: {file: tasks.py, function: gate, depends_on: [a]}
          c: {file: tasks.py, function: c, depends_on: [b]}
        """, tasks=TASKS + """
def c() -> int:
    (Path(__file__).parent / "c-ran").touch()
    return 3
""")
    project, pm, flow, storage, other, run_id = q.project, q.plugins, q.flow, q.storage, q.other, q.run_id

    async def main() -> Any:
        service = Service(project=project, plugins=pm, storage=storage, paths=[flow], lease=0.3, log=lambda line: None)
        service.start_runs()
        while other.get_run(run_id).tasks["b"].status != "running":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        assert [r.id for r in other.claim_runs("elsewhere/1/b:1", 30.0)] == [run_id]
        (tmp_path / "go").touch()  # b ends: the step that records it and starts c is refused
        result = await asyncio.wait_for(service.active[run_id].task, 10)
        await asyncio.sleep(0.3)  # (a thread it had started would have run c by now)
        return result

    try:
        assert asyncio.run(main()).status == STOPPED
        assert not (tmp_path / "c-ran").exists()
        assert other.get_run(run_id).tasks["c"].status == "pending"
    finally:
        (tmp_path / "go").touch()
        storage.close()
        other.close()
