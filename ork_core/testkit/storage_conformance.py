"""`StorageConformance`: the storage contract (`ork_core.storage.base`), checked against any backend.

One suite for every backend, ork's SQLite included: what ``claim_run``, the per-tick key,
``write`` batches and the readers promise is tested here once, so a second backend cannot
drift from the first. Concurrency is tested the way it happens: several `Storage` objects
(several connections) in threads, and several processes at a gate, on one database.

A subclass gives `url`, a fresh, empty database for each test (nothing may be created in
it before the test opens it: the migration race needs it empty), usually from an autouse
fixture::

    class TestPostgresConformance(StorageConformance):
        storage_class = PostgresStorage

        @pytest.fixture(autouse=True)
        def _fresh(self, fresh_database_url):
            self.url = fresh_database_url
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ork_core.errors import RunClaimedError, RunNotFoundError, StorageError
from ork_core.storage.base import (
    QUEUED,
    JSONText,
    LogLine,
    Metric,
    NewWork,
    PauseState,
    RunOrigin,
    RunUpdate,
    ScheduleRecord,
    Storage,
    TaskUpdate,
    WorkOutcome,
)

_CHILD = """
import importlib, json, os, sys, time
module, _, name = sys.argv[1].partition(":")
go, action = sys.argv[2], sys.argv[3]
cls = getattr(importlib.import_module(module), name)
while not os.path.exists(go):
    time.sleep(0.001)
storage = cls(os.environ["ORK_CONFORMANCE_URL"])
if action == "claim":
    print(json.dumps(storage.claim_run("r1", sys.argv[4], expected=None)))
elif action == "claim_runs":
    mine = []
    while batch := storage.claim_runs(sys.argv[4], 30.0, limit=3):
        mine += [r.id for r in batch]
    print(json.dumps(mine))
elif action == "claim_work":
    mine = []
    while batch := storage.claim_work(sys.argv[4], ["q"], 30.0, 2):
        mine += [i.task for i in batch]
    print(json.dumps(mine))
elif action == "ticks":
    won = [ts for ts in range(0, 3000, 60) if storage.create_run(
        f"{sys.argv[4]}-{ts}", "h", "w", "wf.yaml", {}, [("a", "python")], 1.0,
        origin=__import__("ork_core.storage.base", fromlist=["RunOrigin"]).RunOrigin("schedule", "0", ts))]
    print(json.dumps(won))
else:
    storage.list_runs()
storage.close()
"""


def tick(ts: int, trigger: str = "schedule", schedule: str = "0") -> RunOrigin:
    """The origin of a run for tick `ts` of schedule `schedule`."""
    return RunOrigin(trigger, schedule, ts, f"@{ts}", f"@{ts - 60}", f"@{ts}")


class StorageConformance:
    """The contract every storage backend keeps; subclass it as a pytest class (see the module)."""

    storage_class: ClassVar[type[Storage]]
    """The backend under test, importable by child processes as ``module:Class``."""
    processes: ClassVar[int] = 4
    """How many processes race in the multi-process checks."""
    url: str
    """A fresh, empty database for this test; set it before the test runs (an autouse fixture)."""

    # -- helpers -------------------------------------------------------------------------

    def open(self) -> Storage:
        """Another `Storage` on this test's database (its own connection, as another process would have)."""
        storage = self.storage_class(self.url)
        self.__dict__.setdefault("_opened", []).append(storage)
        return storage

    def teardown_method(self, method: Callable[..., Any] | None = None) -> None:
        for storage in self.__dict__.pop("_opened", []):
            try:
                storage.close()
            except Exception:  # noqa: BLE001 - a test may have closed it already
                pass

    def stored(self, storage: Storage | None = None) -> Storage:
        """A storage with workflow ``w`` (hash ``h``) saved, ready for runs."""
        storage = storage or self.open()
        storage.save_workflow("h", "w", "wf.yaml", "name: w\n", {"tasks": ["a", "b"]})
        return storage

    @staticmethod
    def create(
        storage: Storage, run_id: str, origin: RunOrigin | None = None, *, status: str = QUEUED, wf: str = "w",
        owner: str | None = None, now: float | None = None, tasks: tuple[str, ...] = ("a",),
    ) -> bool:
        created = float(len(run_id)) if now is None else now
        return storage.create_run(
            run_id, "h", wf, "wf.yaml", {"n": 1}, [(t, "python") for t in tasks], created, owner=owner,
            origin=origin, status=status,
        )

    def children(self, action: str, *extra: list[str]) -> list[str]:
        """Run `processes` children that open this database at one moment and do `action`; their outputs."""
        target = f"{self.storage_class.__module__}:{self.storage_class.__qualname__}"
        env = {**os.environ, "ORK_CONFORMANCE_URL": self.url}
        with tempfile.TemporaryDirectory() as scratch:
            go = Path(scratch) / "go"
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", _CHILD, target, str(go), action, *(extra[i] if extra else [])],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                )
                for i in range(self.processes)
            ]
            try:
                time.sleep(1.0)  # every interpreter at the gate: the imports are done before it
                go.touch()
                results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
        failed = [err for _, err, code in results if code]
        assert not failed, failed
        return [out for out, _, _ in results]

    # -- workflows and runs --------------------------------------------------------------

    def test_a_workflow_is_stored_once_under_its_hash(self) -> None:
        storage = self.open()
        storage.save_workflow("h", "w", "wf.yaml", "name: w\n", {"tasks": {"a": {"n": 1}}})
        storage.save_workflow("h", "w", "other.yaml", "changed\n", {"other": True})  # a no-op: the hash is stored
        assert storage.load_workflow("h") == ({"tasks": {"a": {"n": 1}}}, "name: w\n")
        try:
            storage.load_workflow("nope")
        except StorageError as exc:
            assert "nope" in str(exc)
        else:
            raise AssertionError("a missing workflow snapshot must raise StorageError")

    def test_a_run_comes_back_as_created(self) -> None:
        storage = self.stored()
        assert self.create(storage, "r1", status="pending", owner="h/1/b:1", tasks=("b", "a", "c"), now=12.5)
        run = self.open().get_run("r1")  # another connection sees it: it was committed
        assert (run.id, run.workflow_hash, run.workflow_name, run.workflow_file) == ("r1", "h", "w", "wf.yaml")
        assert run.params == {"n": 1} and run.status == "pending" and run.created_at == 12.5
        assert run.owner == "h/1/b:1" and run.pid == os.getpid() and not run.managed and not run.cancel_requested
        assert run.origin == RunOrigin() and run.started_at is None and run.finished_at is None and run.error is None
        assert list(run.tasks) == ["b", "a", "c"]  # in the order given
        a = run.tasks["a"]
        assert (a.status, a.executor, a.attempt, a.try_number, a.output, a.error) == ("pending", "python", 0, 0, None, None)
        assert (a.poll_failures, a.uncertain_retries, a.adopt_first, a.handle) == (0, 0, False, None)

    def test_an_unknown_run_is_not_found_with_close_ids(self) -> None:
        storage = self.stored()
        self.create(storage, "2024-01-01-abcdef")
        try:
            storage.get_run("2024-01-01-abcdeg")
        except RunNotFoundError as exc:
            assert "2024-01-01-abcdef" in str(exc)
        else:
            raise AssertionError("get_run of an unknown id must raise RunNotFoundError")

    def test_a_duplicate_run_id_is_an_error_not_silence(self) -> None:
        storage = self.stored()
        assert self.create(storage, "r1")
        try:
            self.create(storage, "r1")
        except StorageError as exc:
            assert "already exists" in str(exc)
        else:
            raise AssertionError("a second run with the same id must raise StorageError")
        assert [r.id for r in storage.list_runs()] == ["r1"]
        assert self.create(storage, "r2")  # and the storage is still usable

    def test_a_tick_has_one_run_whoever_creates_it(self) -> None:
        storage = self.stored()
        assert self.create(storage, "r1", tick(60))
        assert not self.create(storage, "r2", tick(60))
        assert not self.create(storage, "r3", tick(60, "backfill"))  # a backfill of a tick that ran is nothing new
        assert self.create(storage, "r4", tick(120, "backfill"))
        assert self.create(storage, "r5", tick(60, schedule="nightly"))  # another schedule's tick
        assert [r.id for r in storage.list_runs()] == ["r5", "r4", "r1"]
        assert storage.get_run("r1").tasks["a"].status == "pending"
        try:
            storage.get_run("r2")
        except RunNotFoundError:
            pass
        else:
            raise AssertionError("a refused run must leave nothing behind")
        assert self.create(storage, "m1") and self.create(storage, "m2")  # manual runs have no tick

    def test_origin_and_flags_come_back(self) -> None:
        storage = self.stored()
        backfill = RunOrigin("backfill", "0", 600, "@600", "@540", "@600", max_active_runs=3)
        self.create(storage, "r1", tick(60))
        self.create(storage, "r2", None, status="pending")
        self.create(storage, "r3", backfill)
        r1, r2, r3 = storage.get_run("r1"), storage.get_run("r2"), storage.get_run("r3")
        assert r1.origin == tick(60) and r1.managed and r1.status == QUEUED and r1.pid is None
        assert r2.origin == RunOrigin() and not r2.managed and r2.pid is not None
        assert r3.origin == backfill and [r.origin for r in storage.list_runs(1)] == [backfill]

    # -- claims --------------------------------------------------------------------------

    def test_claim_run_is_a_compare_and_set_of_the_owner(self) -> None:
        one, two = self.stored(), self.open()
        self.create(one, "r1", owner="h/1/b:1")
        assert one.get_run("r1").owner == "h/1/b:1"
        # two claimants that both read the dead owner h/1/b:1: one wins, the other sees the winner
        assert two.claim_run("r1", "h/2/b:2", expected="h/1/b:1") == "h/2/b:2"
        assert one.claim_run("r1", "h/3/b:3", expected="h/1/b:1") == "h/2/b:2"
        assert two.claim_run("r1", "h/2/b:2", expected=None) == "h/2/b:2"  # already ours
        one.release_run("r1", "h/3/b:3")  # not the owner: nothing happens
        assert one.get_run("r1").owner == "h/2/b:2"
        two.release_run("r1", "h/2/b:2")
        assert one.get_run("r1").owner is None
        assert one.claim_run("r1", "h/3/b:3", expected="h/2/b:2") is None  # released since it was read
        assert one.claim_run("r1", "h/3/b:3", expected=None) == "h/3/b:3"
        try:
            one.claim_run("nope", "h/3/b:3", expected=None)
        except RunNotFoundError:
            pass
        else:
            raise AssertionError("claim_run of an unknown run must raise RunNotFoundError")

    def test_threads_racing_to_claim_a_run_have_one_winner(self) -> None:
        self.create(self.stored(), "r1")
        storages = [self.open() for _ in range(8)]
        barrier = threading.Barrier(len(storages))
        results: dict[str, str | None] = {}

        def claim(i: int) -> None:
            barrier.wait()
            results[f"o/{i}"] = storages[i].claim_run("r1", f"o/{i}", expected=None)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(storages))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = {owner for owner, got in results.items() if got == owner}
        assert len(winners) == 1, results
        assert set(results.values()) == winners  # every loser was told who won
        assert self.open().get_run("r1").owner in winners

    def test_processes_racing_to_claim_a_run_have_one_winner(self) -> None:
        self.create(self.stored(), "r1")
        owners = [f"host/{i}/boot:{i}" for i in range(self.processes)]
        results = [json.loads(out) for out in self.children("claim", *[[o] for o in owners])]
        winners = [o for o, got in zip(owners, results) if got == o]
        assert len(winners) == 1, results
        assert set(results) == set(winners)
        assert self.open().get_run("r1").owner == winners[0]

    # -- leases (several `ork scheduler`s) --------------------------------------------------

    def test_claim_runs_takes_unheld_managed_runs_oldest_first_with_a_lease(self) -> None:
        storage = self.stored()
        for i, run_id in enumerate(["q1", "q2", "q3", "q4"]):
            self.create(storage, run_id, now=10.0 + i)
        self.create(storage, "mine", status="pending", now=1.0)  # `ork run`'s: never a scheduler's
        self.create(storage, "held", now=2.0)
        assert storage.claim_run("held", "h/9/b:9", expected=None) == "h/9/b:9"
        storage.write([RunUpdate("q4", {"status": "success"})])
        before = time.time()
        got = storage.claim_runs("A", 30.0, limit=1)
        assert [r.id for r in got] == ["q1"] and got[0].owner == "A"
        assert got[0].lease_until is not None and before + 25 < got[0].lease_until < time.time() + 35
        assert [r.id for r in storage.claim_runs("A", 30.0, run_ids=["q3", "mine", "held", "q4"])] == ["q3"]
        assert storage.claim_runs("B", 30.0, run_ids=[]) == []
        assert [r.id for r in self.open().claim_runs("B", 30.0)] == ["q2"]
        assert self.open().claim_runs("C", 30.0) == []
        runs = {r.id: r for r in storage.list_runs(10)}
        assert {k: r.owner for k, r in runs.items()} == {
            "q1": "A", "q2": "B", "q3": "A", "q4": None, "mine": None, "held": "h/9/b:9"}
        assert runs["held"].lease_until is None and storage.get_run("q2").lease_until == runs["q2"].lease_until

    def test_an_ended_lease_is_taken_over_and_its_old_owner_is_told(self) -> None:
        one, two = self.stored(), self.open()
        self.create(one, "r1")
        self.create(one, "r2")
        assert {r.id for r in one.claim_runs("A", 0.3)} == {"r1", "r2"}
        assert two.claim_runs("B", 30.0) == []  # not ended yet
        assert one.renew_leases("A", ["r1"], 0.3) == {"r1"}
        time.sleep(0.5)
        assert [r.id for r in two.claim_runs("B", 30.0, run_ids=["r1"])] == ["r1"]
        assert one.renew_leases("A", ["r1", "r2", "nope"], 30.0) == {"r2"}  # r1 is B's now: stop it
        assert two.renew_leases("B", ["r1"], 30.0) == {"r1"}
        assert two.claim_runs("B", 30.0) == []  # r2's lease was renewed in time
        one.release_run("r1", "A")  # not A's any more: nothing happens
        assert one.get_run("r1").owner == "B"
        two.release_run("r1", "B")
        released = one.get_run("r1")
        assert released.owner is None and released.lease_until is None
        assert one.renew_leases("A", [], 30.0) == set()

    def test_claim_run_keeps_its_owners_lease_and_drops_one_it_takes(self) -> None:
        storage = self.stored()
        self.create(storage, "r1")
        [claimed] = storage.claim_runs("A", 0.2)
        assert storage.claim_run("r1", "A", expected=None) == "A"  # Scheduler.run, after the service's claim
        assert storage.get_run("r1").lease_until == claimed.lease_until
        assert storage.claim_run("r1", "X", expected="A") == "X"  # `ork resume --force`
        assert storage.get_run("r1").lease_until is None
        time.sleep(0.3)
        assert storage.claim_runs("B", 30.0) == []  # a claim without a lease lasts as long as its process
        assert storage.renew_leases("A", ["r1"], 30.0) == set()
        assert storage.renew_leases("X", ["r1"], 30.0) == {"r1"}  # a claim_run holder may take a lease
        assert storage.get_run("r1").lease_until is not None

    def test_a_leased_claim_run_is_leased_in_the_same_write(self) -> None:
        """`ork scheduler` taking a dead owner's run: killed right after, the run is free after the lease."""
        storage = self.stored()
        self.create(storage, "r1")
        assert storage.claim_run("r1", "dead", expected=None) == "dead"
        before = time.time()
        assert storage.claim_run("r1", "A", expected="dead", lease=0.3) == "A"
        lease_until = storage.get_run("r1").lease_until
        assert lease_until is not None and before - 1 < lease_until < time.time() + 2
        assert storage.claim_run("r1", "B", expected="dead", lease=30.0) == "A"  # lost the race: nothing changes
        assert storage.get_run("r1").lease_until == lease_until
        assert self.open().claim_runs("B", 30.0) == []
        time.sleep(0.5)  # A died without a renewal
        assert [r.id for r in self.open().claim_runs("B", 30.0)] == ["r1"]
        assert storage.claim_run("r1", "B", expected=None, lease=30.0) == "B"  # one kept is leased anew
        renewed = storage.get_run("r1").lease_until
        assert renewed is not None and renewed > time.time() + 25

    def test_a_fenced_write_lands_only_while_its_owner_holds_the_run(self) -> None:
        storage = self.stored()
        self.create(storage, "r1")
        self.create(storage, "r2")
        storage.claim_runs("A", 30.0)
        line = LogLine("r1", "a", 1, 1.0, "info", "stdout", "x")
        storage.write([TaskUpdate("r1", "a", {"status": "running"})], [line], owner="A")
        assert storage.get_run("r1").tasks["a"].status == "running" and len(storage.logs("r1")) == 1
        assert storage.claim_run("r2", "X", expected="A") == "X"
        stale = LogLine("r2", "a", 1, 1.0, "info", "stdout", "stale")
        batches: list[tuple[list[TaskUpdate | RunUpdate], list[LogLine]]] = [
            ([RunUpdate("r2", {"error": "stale"})], []),
            ([], [stale]),  # a log line alone is fenced too
            ([TaskUpdate("r1", "a", {"status": "success"}), RunUpdate("r2", {"error": "stale"})], []),  # all or nothing
        ]
        for batch, logs in batches:
            try:
                storage.write(batch, logs, owner="A")
            except RunClaimedError as exc:
                assert exc.run_id == "r2" and exc.owner == "X"
            else:
                raise AssertionError("a write fenced by a lost claim must raise RunClaimedError")
        r1, r2 = storage.get_run("r1"), storage.get_run("r2")
        assert r1.tasks["a"].status == "running" and r2.error is None and storage.logs("r2") == []  # nothing of them
        storage.write([RunUpdate("r2", {"error": "unfenced"})])  # (without an owner: not checked)
        assert storage.get_run("r2").error == "unfenced"

    def test_no_fenced_write_of_an_old_owner_lands_after_a_new_owner_claimed(self) -> None:
        """The old owner writing as fast as it can while its lease ends and another claims the run."""
        first, second = self.stored(), self.open()
        self.create(first, "r1")
        first.claim_runs("A", 0.2)
        refused: list[int] = []

        def old_owner() -> None:
            for i in range(100_000):
                try:
                    first.write([RunUpdate("r1", {"error": f"A{i}"})], owner="A")
                except RunClaimedError:
                    refused.append(i)
                    return

        writer = threading.Thread(target=old_owner)
        writer.start()
        time.sleep(0.3)
        while not second.claim_runs("B", 30.0):  # (a row the writer holds is skipped: try again)
            time.sleep(0.01)
        second.write([RunUpdate("r1", {"error": "B"})], owner="B")
        writer.join(30)
        assert refused and not writer.is_alive()
        assert second.get_run("r1").error == "B"

    def test_threads_racing_to_claim_runs_claim_each_once(self) -> None:
        storage = self.stored()
        for i in range(40):
            self.create(storage, f"r{i:02}", now=float(i))
        storages = [self.open() for _ in range(6)]
        barrier = threading.Barrier(len(storages))
        claimed: dict[str, list[str]] = {}

        def claim(i: int) -> None:
            barrier.wait()
            mine = claimed.setdefault(f"o/{i}", [])
            while batch := storages[i].claim_runs(f"o/{i}", 30.0, limit=3):
                mine += [r.id for r in batch]

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(storages))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [run_id for ids in claimed.values() for run_id in ids]
        assert sorted(every) == [f"r{i:02}" for i in range(40)], claimed  # each once, none lost
        owners = {r.id: r.owner for r in storage.list_runs(100)}
        assert all(owners[run_id] == owner for owner, ids in claimed.items() for run_id in ids)

    def test_processes_racing_to_claim_runs_claim_each_once(self) -> None:
        storage = self.stored()
        for i in range(30):
            self.create(storage, f"r{i:02}", now=float(i))
        owners = [f"host/{i}/boot:{i}" for i in range(self.processes)]
        results = [json.loads(out) for out in self.children("claim_runs", *[[o] for o in owners])]
        every = sorted(run_id for ids in results for run_id in ids)
        assert every == [f"r{i:02}" for i in range(30)], results
        stored = {r.id: r.owner for r in self.open().list_runs(100)}
        assert all(stored[run_id] == owner for owner, ids in zip(owners, results) for run_id in ids)

    def test_threads_replacing_a_workflows_schedules_at_once_all_succeed(self) -> None:
        """Several schedulers starting together each save the schedules of the same workflow."""
        storages = [self.open() for _ in range(6)]
        barrier = threading.Barrier(len(storages))
        errors: list[BaseException] = []

        def save(i: int) -> None:
            record = ScheduleRecord("w", "0", "wf.yaml", "* * * * *", "UTC", False, None, {"i": i}, float(i))
            barrier.wait()
            try:
                for _ in range(5):
                    storages[i].save_schedules("w", [record])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=(i,)) for i in range(len(storages))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert [(s.workflow, s.key) for s in self.open().list_schedules()] == [("w", "0")]

    # -- one run per tick, however many create it ----------------------------------------

    def test_threads_racing_for_the_same_ticks_make_one_run_each(self) -> None:
        self.stored()
        won: list[int] = []
        lock = threading.Lock()

        def contender(n: int) -> None:
            storage = self.open()
            mine = [ts for ts in range(0, 3000, 60) if self.create(storage, f"r{n}-{ts}", tick(ts))]
            with lock:
                won.extend(mine)

        threads = [threading.Thread(target=contender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == list(range(0, 3000, 60))
        storage = self.open()
        assert storage.last_ticks() == {("w", "0"): 2940}
        assert len(storage.list_runs(1000)) == 50

    def test_processes_racing_for_the_same_ticks_make_one_run_each(self) -> None:
        self.stored()
        won = [ts for out in self.children("ticks", *[[f"p{i}"] for i in range(self.processes)]) for ts in json.loads(out)]
        assert sorted(won) == list(range(0, 3000, 60))
        assert len(self.open().list_runs(1000)) == 50

    # -- migrations ----------------------------------------------------------------------

    def test_processes_opening_an_empty_database_at_once_migrate_it_once(self) -> None:
        self.children("open")
        storage = self.stored()  # the schema is complete: everything works
        assert self.create(storage, "r1", tick(60)) and not self.create(storage, "r2", tick(60))

    def test_opening_a_current_database_again_changes_nothing(self) -> None:
        self.create(self.stored(), "r1")
        self.open().close()
        assert [r.id for r in self.open().list_runs()] == ["r1"]

    # -- write batches -------------------------------------------------------------------

    def test_a_batch_is_applied_in_order(self) -> None:
        storage = self.stored()
        self.create(storage, "r1", status="pending", tasks=("a", "b"))
        storage.write([
            RunUpdate("r1", {"status": "running", "started_at": 1.5}),
            TaskUpdate("r1", "a", {"status": "running", "attempt": 1, "try_number": 1, "started_at": 2.0}),
            TaskUpdate("r1", "b", {"status": "running", "attempt": 1}),
            TaskUpdate("r1", "a", {"status": "success", "finished_at": 3.0, "output": JSONText('{"rows": [1, 2]}')}),
            TaskUpdate("r1", "b", {"status": "deferred", "tracker": "http", "handle": {"job": "j-1"},
                                   "link": "https://example.invalid/j-1", "external_id": "j-1", "deferred_at": 4.0,
                                   "idempotency_key": "k-1", "pgid": 4242, "adopt_first": True,
                                   "uncertain_retries": 1, "next_try_at": 9.5, "poll_failures": 2,
                                   "last_poll_at": 5.0, "last_poll_error": "503"}),
            RunUpdate("r1", {"cancel_requested": True, "pid": 77}),
        ])
        run = self.open().get_run("r1")
        assert (run.status, run.started_at, run.cancel_requested, run.pid) == ("running", 1.5, True, 77)
        a, b = run.tasks["a"], run.tasks["b"]
        assert (a.status, a.attempt, a.try_number, a.started_at, a.finished_at) == ("success", 1, 1, 2.0, 3.0)
        assert a.output == {"rows": [1, 2]} and a.duration == 1.0
        assert (b.status, b.tracker, b.handle, b.link, b.external_id) == (
            "deferred", "http", {"job": "j-1"}, "https://example.invalid/j-1", "j-1")
        assert (b.deferred_at, b.idempotency_key, b.pgid, b.adopt_first, b.uncertain_retries) == (4.0, "k-1", 4242, True, 1)
        assert (b.next_try_at, b.poll_failures, b.last_poll_at, b.last_poll_error) == (9.5, 2, 5.0, "503")
        assert [t.name for t in storage.deferred_tasks()] == ["b"]
        storage.write([RunUpdate("r1", {"status": "success", "finished_at": 10.0, "error": None}),
                       TaskUpdate("r1", "b", {"status": "success", "adopt_first": 0})])
        run = storage.get_run("r1")
        assert run.duration == 8.5 and storage.deferred_tasks() == [] and run.tasks["b"].adopt_first is False

    def test_outputs_arrive_encoded_and_are_stored_as_is(self) -> None:
        storage = self.stored()
        self.create(storage, "r1", status="pending", tasks=("text", "encoded", "plain", "none"))
        storage.write([
            TaskUpdate("r1", "text", {"output": JSONText('"just text"')}),
            TaskUpdate("r1", "encoded", {"output": JSONText('{"b":1,  "a":[true,null]}')}),
            TaskUpdate("r1", "plain", {"output": {"not": "encoded yet"}}),  # a plain value is encoded by the backend
            TaskUpdate("r1", "none", {"output": None}),
        ])
        tasks = storage.get_run("r1").tasks
        assert tasks["text"].output == "just text"  # not encoded twice ('"\\"just text\\""')
        assert tasks["encoded"].output == {"b": 1, "a": [True, None]}
        assert tasks["plain"].output == {"not": "encoded yet"} and tasks["none"].output is None
        shown = storage.get_run("r1", excerpt=100).tasks
        assert shown["encoded"].output_excerpt == '{"b":1,  "a":[true,null]}'  # the text as it was given

    def test_a_failing_batch_writes_nothing(self) -> None:
        storage = self.stored()
        self.create(storage, "r1", status="pending")
        lines = [LogLine("r1", "a", 1, 1.0, "INFO", "log", "lost")]
        try:
            storage.write([RunUpdate("r1", {"status": "running"}), TaskUpdate("r1", "a", {"no_such_field": 1})], lines)
        except ValueError:
            pass
        else:
            raise AssertionError("an update of an unknown field must be refused")
        assert storage.get_run("r1").status == "pending" and storage.logs("r1") == []
        storage.write([RunUpdate("r1", {"status": "running"})], lines)  # still usable
        assert storage.get_run("r1").status == "running" and len(storage.logs("r1")) == 1

    def test_superseded_attempts_go_to_the_history(self) -> None:
        storage = self.stored()
        self.create(storage, "r1", status="pending", tasks=("a", "b"))
        storage.write([TaskUpdate("r1", "a", {"status": "running", "attempt": 1, "try_number": 1, "started_at": 1.0})])
        storage.write([
            TaskUpdate("r1", "a", {"status": "retrying", "try_number": 1, "started_at": 1.0, "finished_at": 2.0,
                                   "error": "boom"}, attempt_row="end", attempt=1),
            TaskUpdate("r1", "a", {"status": "running", "attempt": 2, "try_number": 2, "started_at": 3.0,
                                   "finished_at": None, "error": None}),
            TaskUpdate("r1", "b", {"status": "running", "attempt": 1, "try_number": 1, "started_at": 2.5}),
        ])
        # written twice (a crash between the two commits of an attempt's end): one row
        storage.write([TaskUpdate("r1", "a", {"status": "retrying", "try_number": 1, "started_at": 1.0,
                                              "finished_at": 2.0, "error": "boom"}, attempt_row="end", attempt=1)])
        storage.write([TaskUpdate("r1", "a", {"status": "running", "attempt": 2, "try_number": 2, "started_at": 3.0,
                                              "finished_at": None, "error": None})])
        got = [(a.task, a.attempt, a.try_number, a.status, a.started_at, a.finished_at, a.error)
               for a in storage.attempts("r1")]
        assert got == [
            ("a", 1, 1, "failed", 1.0, 2.0, "boom"),
            ("b", 1, 1, "running", 2.5, None, None),
            ("a", 2, 2, "running", 3.0, None, None),
        ]
        assert storage.attempts("nope") == []

    def test_logs_and_metrics_keep_their_order(self) -> None:
        storage = self.stored()
        self.create(storage, "r1", status="pending", tasks=("a", "b"))
        lines = [LogLine("r1", "ab"[i % 2], 1, 10.0 - i, "INFO", "stdout", f"line {i} ünï") for i in range(20)]
        storage.write([], lines[:10])
        storage.write([], lines[10:], [Metric("r1", "a", 1, 1.0, "rows", 3.0, {"table": "t"}),
                                       Metric("r1", "b", 1, 0.5, "rows", 1.5, {})])
        assert storage.logs("r1") == lines  # in the order written, not by timestamp
        assert storage.logs("r1", "b") == [line for line in lines if line.task == "b"]
        assert storage.logs("r1", "zzz") == [] and storage.logs("nope") == []
        assert [(m.task, m.value, m.labels) for m in storage.metrics("r1")] == [("a", 3.0, {"table": "t"}), ("b", 1.5, {})]

    def test_writes_from_several_threads_all_land(self) -> None:
        """`write` may come from worker threads flushing logs while the scheduler commits its steps."""
        storage = self.stored()
        self.create(storage, "r1", status="pending", tasks=("a",))
        errors: list[BaseException] = []

        def flush(worker: int) -> None:
            try:
                for i in range(25):
                    storage.write([], [LogLine("r1", "a", 1, float(i), "INFO", "log", f"{worker}:{i}")])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def step() -> None:
            try:
                for i in range(25):
                    storage.write([TaskUpdate("r1", "a", {"poll_failures": i})])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=flush, args=(w,)) for w in range(4)] + [threading.Thread(target=step)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        got = [line.line for line in storage.logs("r1")]
        assert sorted(got) == sorted(f"{w}:{i}" for w in range(4) for i in range(25))
        for w in range(4):  # each thread's lines in its order
            assert [g for g in got if g.startswith(f"{w}:")] == [f"{w}:{i}" for i in range(25)]
        assert storage.get_run("r1").tasks["a"].poll_failures == 24

    def test_text_with_a_nul_character_is_stored(self) -> None:
        """A task may print anything; a NUL must not make the batch (and so the run) fail."""
        storage = self.stored()
        self.create(storage, "r1", status="pending")
        storage.write([TaskUpdate("r1", "a", {"error": "bad\x00byte"})],
                      [LogLine("r1", "a", 1, 0.0, "INFO", "stdout", "nul\x00here")])
        error = storage.get_run("r1").tasks["a"].error or ""
        line = storage.logs("r1")[0].line
        assert error.startswith("bad") and error.endswith("byte") and line.startswith("nul") and line.endswith("here")

    # -- reading for displays ------------------------------------------------------------

    def test_an_excerpt_is_the_start_of_the_output_and_error(self) -> None:
        storage = self.stored()
        self.create(storage, "r1", status="pending", tasks=("big", "small", "none"))
        big = JSONText(json.dumps({"rows": ["x" * 100] * 20000}))  # 2 MB
        storage.write([
            TaskUpdate("r1", "big", {"status": "success", "output": big, "error": "e" * 500}),
            TaskUpdate("r1", "small", {"status": "success", "output": JSONText("[1]")}),
        ])
        shown = storage.get_run("r1", excerpt=40)
        assert shown.status == "pending" and list(shown.tasks) == ["big", "small", "none"]
        b, s, n = shown.tasks["big"], shown.tasks["small"], shown.tasks["none"]
        assert b.output is None and b.output_excerpt == big[:40] and b.error == "e" * 40
        assert s.output is None and s.output_excerpt == "[1]"
        assert n.output is None and n.output_excerpt is None and n.error is None
        full = storage.get_run("r1").tasks["big"]
        assert full.output == json.loads(big) and full.output_excerpt is None

    def test_list_filters_and_paging(self) -> None:
        storage = self.stored()
        storage.save_workflow("h", "v", "v.yaml", "", {})
        for i in range(5):
            self.create(storage, "r" * (i + 1), status="pending" if i % 2 else QUEUED, wf="w" if i < 3 else "v")
        storage.write([RunUpdate("rr", {"status": "success"}), RunUpdate("rrrr", {"status": "failed"})])
        assert [r.id for r in storage.list_runs(workflow="v")] == ["rrrrr", "rrrr"]
        assert [r.id for r in storage.list_runs(statuses={QUEUED})] == ["rrrrr", "rrr", "r"]
        assert [r.id for r in storage.list_runs(statuses={QUEUED, "success"}, workflow="w")] == ["rrr", "rr", "r"]
        assert [r.id for r in storage.list_runs(statuses=())] == []
        assert [r.id for r in storage.list_runs(unfinished=True)] == ["rrrrr", "rrr", "r"]
        assert [r.id for r in storage.list_runs(2, offset=1)] == ["rrrr", "rrr"]
        assert [r.id for r in storage.list_runs(2, oldest_first=True)] == ["r", "rr"]
        assert [r.id for r in storage.list_runs(2, offset=4)] == ["r"]
        assert all(r.tasks == {} for r in storage.list_runs())

    def test_runs_created_at_the_same_moment_keep_their_creation_order(self) -> None:
        storage = self.stored()
        for run_id in ("c", "a", "b"):
            self.create(storage, run_id, now=5.0)
        assert [r.id for r in storage.list_runs()] == ["b", "a", "c"]
        assert [r.id for r in storage.list_runs(oldest_first=True)] == ["c", "a", "b"]

    def test_last_ticks_count_only_the_schedule(self) -> None:
        storage = self.stored()
        assert storage.last_ticks() == {}
        self.create(storage, "r1", tick(60))
        self.create(storage, "r2", tick(600, "backfill"))
        self.create(storage, "r3", tick(120))
        self.create(storage, "r4", tick(30, schedule="nightly"))
        assert storage.last_ticks() == {("w", "0"): 120, ("w", "nightly"): 30}

    def test_schedules_are_replaced_per_workflow_and_pauses_kept(self) -> None:
        storage = self.stored()
        a = ScheduleRecord("w", "0", "wf.yaml", "0 6 * * *", "UTC", False, 1, {"cron": "0 6 * * *"}, 1.0)
        b = ScheduleRecord("w", "nightly", "wf.yaml", "@daily", "Europe/Berlin", True, None, {"params": {"x": [1]}}, 1.5)
        other = ScheduleRecord("V", "0", "v.yaml", "@hourly", "UTC", False, None, {}, 2.0)
        storage.save_schedules("w", [b, a])
        storage.save_schedules("V", [other])
        assert storage.list_schedules() == [other, a, b]  # by workflow and key, upper case first
        storage.save_schedules("w", [b])
        assert storage.list_schedules() == [other, b]
        storage.save_schedules("w", [])
        assert storage.list_schedules() == [other]
        assert storage.pause_states() == {}
        storage.set_paused("w", True, 5.0)
        storage.set_paused("never-seen", True, 6.0)
        storage.set_paused("w", False, 7.0)
        assert self.open().pause_states() == {"w": PauseState(False, 7.0), "never-seen": PauseState(True, 6.0)}

    # -- workers -------------------------------------------------------------------------

    @staticmethod
    def finish(storage: Storage, worker: str, id: str, status: str, output: str | None, error: str | None) -> bool:
        recorded = storage.finish_work(worker, [WorkOutcome(id, status, output, error)])
        assert recorded <= {id}
        return recorded == {id}

    @staticmethod
    def enqueue(storage: Storage, n: int, queue: str = "q", now: float | None = None) -> str:
        [id_] = storage.enqueue_work([NewWork("r", f"t{n}", 1, queue, f"key-{n}", {"task": f"t{n}", "n": n})],
                                     float(n) if now is None else now)
        return id_

    def test_enqueueing_an_attempt_twice_finds_the_same_item(self) -> None:
        storage = self.open()
        first = self.enqueue(storage, 1)
        assert self.enqueue(storage, 1) == first
        assert self.open().enqueue_work([NewWork("r", "t1", 1, "q", "key-1", {"other": True})], 9.0) == [first]
        item = storage.work_status([first])[first]
        assert (item.status, item.run_id, item.task, item.attempt, item.queue, item.payload) == (
            "queued", "r", "t1", 1, "q", {"task": "t1", "n": 1})

    def test_one_enqueue_of_many_items_keeps_their_order_and_finds_those_enqueued_before(self) -> None:
        storage = self.open()
        before = self.enqueue(storage, 7)
        items = [NewWork("r", f"t{n}", 1, "q", f"key-{n}", {"n": n}) for n in (5, 7, 1, 9, 3)]
        ids = storage.enqueue_work(items, 10.0)
        assert len(set(ids)) == 5 and ids[1] == before
        assert storage.enqueue_work(items, 11.0) == ids and storage.enqueue_work([], 12.0) == []
        claimed = self.open().claim_work("w1", ["q"], 30.0, 10)
        assert [i.task for i in claimed] == ["t7", "t5", "t1", "t9", "t3"]  # t7 first: enqueued at 7.0

    def test_claim_work_takes_queued_items_of_its_queues_oldest_first(self) -> None:
        storage = self.open()
        ids = [self.enqueue(storage, n, queue="q" if n != 2 else "other") for n in (3, 1, 2, 4)]
        claimed = storage.claim_work("w1", ["q"], 30.0, 2)
        assert [i.task for i in claimed] == ["t1", "t3"]
        assert all(i.status == "running" and i.worker == "w1" and i.lease_until for i in claimed)
        assert [i.task for i in self.open().claim_work("w2", ["q", "none"], 30.0, 5)] == ["t4"]
        assert storage.claim_work("w3", ["q"], 30.0, 5) == []
        assert storage.claim_work("w3", [], 30.0, 5) == []
        assert [i.task for i in storage.claim_work("w3", ["other"], 30.0, 5)] == ["t2"]
        statuses = storage.work_status(ids + ["missing"])
        assert set(statuses) == set(ids) and {i.status for i in statuses.values()} == {"running"}

    def test_only_the_holder_renews_and_finishes_an_item(self) -> None:
        storage = self.open()
        a, b = self.enqueue(storage, 1), self.enqueue(storage, 2)
        storage.claim_work("w1", ["q"], 30.0, 2)
        assert storage.renew_work("w1", [a, b, "missing"], 30.0) == {a, b}
        assert storage.renew_work("w2", [a], 30.0) == set()
        assert not self.finish(storage, "w2", a, "success", "1", None)
        assert self.finish(storage, "w1", a, "success", JSONText('{"x": 1}'), None)
        assert not self.finish(storage, "w1", a, "failed", None, "again")  # finished once
        assert self.finish(storage, "w1", b, "failed", None, "boom\x00")
        got = storage.work_status([a, b])
        assert (got[a].status, json.loads(got[a].output or "null"), got[a].finished_at is not None) == ("success", {"x": 1}, True)
        assert got[b].status == "failed" and (got[b].error or "").startswith("boom")
        assert storage.renew_work("w1", [a, b], 30.0) == set()

    def test_one_finish_records_the_outcomes_the_worker_may_and_only_those(self) -> None:
        storage = self.open()
        a, b, c, d = (self.enqueue(storage, n) for n in (1, 2, 3, 4))
        storage.claim_work("w1", ["q"], 30.0, 3)
        storage.cancel_work(c)
        recorded = self.open().finish_work("w1", [
            WorkOutcome(a, "success", "1"), WorkOutcome(b, "failed", None, "no"), WorkOutcome(c, "success", "3"),
            WorkOutcome(d, "success", "4"),  # queued: nobody's yet
        ])
        assert recorded == {a, b} and storage.finish_work("w1", []) == set()
        got = storage.work_status([a, b, c, d])
        assert [got[i].status for i in (a, b, c, d)] == ["success", "failed", "cancelled", "queued"]
        try:
            storage.finish_work("w1", [WorkOutcome(d, "lost")])
        except ValueError:
            pass
        else:
            raise AssertionError("finish_work took a status other than success or failed")

    def test_an_item_whose_lease_ended_is_lost_and_never_claimed_again(self) -> None:
        storage = self.open()
        a = self.enqueue(storage, 1)
        assert [i.id for i in storage.claim_work("w1", ["q"], 0.3, 1)] == [a]
        assert storage.work_status([a])[a].status == "running"
        time.sleep(0.6)
        assert storage.work_status([a])[a].status == "lost"
        assert storage.renew_work("w1", [a], 30.0) == set()
        assert not self.finish(storage, "w1", a, "success", "1", None)
        assert storage.claim_work("w2", ["q"], 30.0, 5) == []

    def test_a_released_item_is_queued_again_for_any_worker(self) -> None:
        storage = self.open()
        a, b = self.enqueue(storage, 1), self.enqueue(storage, 2)
        storage.claim_work("w1", ["q"], 30.0, 2)
        assert self.finish(storage, "w1", b, "success", "2", None)
        assert storage.release_work("w2", [a], ) == set()  # not its holder
        assert storage.release_work("w1", [a, b]) == {a}  # a finished item stays finished
        assert storage.renew_work("w1", [a], 30.0) == set() and not self.finish(storage, "w1", a, "success", "1", None)
        again = self.open().claim_work("w2", ["q"], 30.0, 5)
        assert [(i.id, i.worker, i.status, i.attempt) for i in again] == [(a, "w2", "running", 1)]

    def test_a_cancelled_item_is_not_renewed_or_finished(self) -> None:
        storage = self.open()
        queued, running = self.enqueue(storage, 1), self.enqueue(storage, 2)
        storage.claim_work("w1", ["q"], 30.0, 1)  # t1 (oldest)
        assert storage.cancel_work(queued) and not storage.cancel_work(queued)
        assert storage.cancel_work(running) is True
        assert storage.claim_work("w1", ["q"], 30.0, 5) == []
        assert storage.renew_work("w1", [queued], 30.0) == set()
        assert not self.finish(storage, "w1", queued, "success", "1", None)
        assert {i.status for i in storage.work_status([queued, running]).values()} == {"cancelled"}

    def test_a_cancel_by_an_owner_needs_the_items_run_to_be_held_by_it(self) -> None:
        storage = self.stored()
        self.create(storage, "r", owner="h/1/b:1")
        a, b = self.enqueue(storage, 1), self.enqueue(storage, 2)
        assert not storage.cancel_work(a, owner="h/2/b:2")  # the run is another's now
        assert storage.work_status([a])[a].status == "queued"
        assert self.open().cancel_work(a, owner="h/1/b:1")
        assert storage.claim_run("r", "h/2/b:2", expected="h/1/b:1") == "h/2/b:2"
        assert not storage.cancel_work(b, owner="h/1/b:1") and storage.cancel_work(b, owner="h/2/b:2")

    def test_workers_racing_to_claim_work_claim_each_item_once(self) -> None:
        storage = self.open()
        for n in range(60):
            self.enqueue(storage, n)
        storages = [self.open() for _ in range(6)]
        barrier = threading.Barrier(len(storages))
        claimed: dict[str, list[str]] = {}

        def claim(i: int) -> None:
            barrier.wait()
            mine = claimed.setdefault(f"w{i}", [])
            while batch := storages[i].claim_work(f"w{i}", ["q"], 30.0, 3):
                mine += [item.task for item in batch]

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(storages))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = sorted(task for tasks in claimed.values() for task in tasks)
        assert every == sorted(f"t{n}" for n in range(60)), claimed

    def test_worker_processes_racing_to_claim_work_claim_each_item_once(self) -> None:
        storage = self.open()
        for n in range(40):
            self.enqueue(storage, n)
        results = [json.loads(out) for out in self.children("claim_work", *[[f"w{i}"] for i in range(self.processes)])]
        assert sorted(t for tasks in results for t in tasks) == sorted(f"t{n}" for n in range(40)), results
        holders = {i.task: i.worker for i in storage.work_status([self.enqueue(storage, n) for n in range(40)]).values()}
        assert all(holders[t] == f"w{i}" for i, tasks in enumerate(results) for t in tasks)

    def test_workers_are_listed_with_what_they_hold(self) -> None:
        storage = self.open()
        assert storage.list_workers() == []
        storage.heartbeat_worker("w1", "host-a", 11, ["q", "gpu"])
        storage.heartbeat_worker("w2", "host-b", 22, ["q"])
        first = storage.list_workers()[0]
        time.sleep(0.02)
        storage.heartbeat_worker("w1", "host-a", 11, ["q", "gpu"])
        self.enqueue(storage, 1)
        storage.claim_work("w1", ["q"], 30.0, 1)
        workers = storage.list_workers()
        assert [(w.id, w.host, w.pid, w.queues, w.running) for w in workers] == [
            ("w1", "host-a", 11, ("q", "gpu"), 1), ("w2", "host-b", 22, ("q",), 0)]
        assert workers[0].started_at == first.started_at and workers[0].heartbeat_at > first.heartbeat_at
        storage.remove_worker("w1")
        assert [w.id for w in storage.list_workers()] == ["w2"]
