"""What storage keeps for schedules: one run per tick by a unique key, filters, pauses."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ork_core.errors import RunNotFoundError, StorageError
from ork_core.storage.base import QUEUED, RunOrigin, ScheduleRecord
from ork_core.storage.sqlite import SQLiteStorage


@pytest.fixture
def storage(tmp_path: Path) -> SQLiteStorage:
    s = SQLiteStorage(f"sqlite:///{tmp_path / 'ork.db'}")
    s.save_workflow("h", "w", "wf.yaml", "", {})
    return s


def tick(ts: int, trigger: str = "schedule") -> RunOrigin:
    return RunOrigin(trigger, "0", ts, f"@{ts}", f"@{ts - 60}", f"@{ts}")


def create(storage: SQLiteStorage, run_id: str, origin: RunOrigin | None = None, status: str = QUEUED, wf: str = "w") -> bool:
    return storage.create_run(run_id, "h", wf, "wf.yaml", {}, [("a", "python")], float(len(run_id)), origin=origin, status=status)


def test_a_tick_has_one_run_whoever_creates_it(storage: SQLiteStorage, tmp_path: Path) -> None:
    assert create(storage, "r1", tick(60))
    assert not create(storage, "r2", tick(60))
    assert not create(storage, "r3", tick(60, "backfill"))  # a backfill of a tick that ran is nothing new
    assert create(storage, "r4", tick(120, "backfill"))
    assert [r.id for r in storage.list_runs()] == ["r4", "r1"]
    assert storage.get_run("r1").tasks["a"].status == "pending"
    with pytest.raises(RunNotFoundError):
        storage.get_run("r2")
    # manual runs have no tick: any number of them
    assert create(storage, "m1") and create(storage, "m2")


def test_many_processes_racing_for_the_same_ticks_make_one_run_each(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ork.db'}"
    SQLiteStorage(url).save_workflow("h", "w", "wf.yaml", "", {})
    won: list[int] = []

    def contender(n: int) -> None:
        s = SQLiteStorage(url)
        won.extend(ts for ts in range(0, 6000, 60) if create(s, f"r{n}-{ts}", tick(ts)))
        s.close()

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == list(range(0, 6000, 60))
    assert SQLiteStorage(url).last_ticks() == {("w", "0"): 5940}


def test_a_duplicate_run_id_is_an_error_not_silence(storage: SQLiteStorage) -> None:
    assert create(storage, "r1")
    with pytest.raises(StorageError, match="already exists"):
        create(storage, "r1")


def test_origin_and_flags_come_back(storage: SQLiteStorage) -> None:
    create(storage, "r1", tick(60))
    create(storage, "r2", None, status="pending")
    r1, r2 = storage.get_run("r1"), storage.get_run("r2")
    assert r1.origin == tick(60) and r1.managed and r1.status == QUEUED and r1.pid is None
    assert r2.origin == RunOrigin() and not r2.managed and r2.pid is not None


def test_list_filters_and_paging(storage: SQLiteStorage) -> None:
    storage.save_workflow("h", "v", "v.yaml", "", {})
    for i in range(5):
        create(storage, "r" * (i + 1), status="pending" if i % 2 else QUEUED, wf="w" if i < 3 else "v")
    assert [r.id for r in storage.list_runs(workflow="v")] == ["rrrrr", "rrrr"]
    assert [r.id for r in storage.list_runs(statuses={QUEUED})] == ["rrrrr", "rrr", "r"]
    assert [r.id for r in storage.list_runs(statuses=())] == []
    assert [r.id for r in storage.list_runs(2, offset=1)] == ["rrrr", "rrr"]
    assert [r.id for r in storage.list_runs(2, oldest_first=True)] == ["r", "rr"]


def test_last_ticks_count_only_the_schedule(storage: SQLiteStorage) -> None:
    create(storage, "r1", tick(60))
    create(storage, "r2", tick(600, "backfill"))
    assert storage.last_ticks() == {("w", "0"): 60}


def test_schedules_are_replaced_per_workflow_and_pauses_kept(storage: SQLiteStorage) -> None:
    a = ScheduleRecord("w", "0", "wf.yaml", "0 6 * * *", "UTC", False, 1, {"cron": "0 6 * * *"}, 1.0)
    b = ScheduleRecord("w", "nightly", "wf.yaml", "@daily", "Europe/Berlin", True, None, {}, 1.0)
    storage.save_schedules("w", [a, b])
    assert storage.list_schedules() == [a, b]
    storage.save_schedules("w", [b])
    assert storage.list_schedules() == [b]
    assert storage.pause_states() == {}
    storage.set_paused("w", True, 5.0)
    storage.set_paused("w", False, 7.0)
    (state,) = storage.pause_states().values()
    assert not state.paused and state.changed_at == 7.0
