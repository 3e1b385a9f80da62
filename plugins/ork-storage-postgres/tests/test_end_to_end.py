"""The real `ork` command on PostgreSQL: a run, then a run killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pg_cli import ork, ork_process, wait_for, write
from ork_storage_postgres.storage import PostgresStorage

TASKS = '''
import os, time
from ork import Context

def step(ctx: Context, name: str, log: str, seconds: float = 0.0, upstream_value: int = 0) -> dict:
    with open(log, "a") as fh:
        fh.write(name + "\\n")
        fh.flush()
        os.fsync(fh.fileno())
    ctx.log.info("step %s", name)
    marker = log + "." + name
    if seconds and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)  # the first attempt only: the one that is killed
    return {"name": name, "size": len(name) * 1000}
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "tasks.py", TASKS)
    write(tmp_path / "ork.yaml", "max_concurrency: 2\n")
    return tmp_path


def chain(folder: Path, sleep_in_b: float) -> Path:
    log = folder / "executions.log"
    return write(folder / "wf.yaml", f"""
        name: chain
        tasks:
          a: {{file: tasks.py, function: step, inputs: {{name: a, log: "{log}"}}}}
          b: {{file: tasks.py, function: step, depends_on: [a], inputs: {{name: b, log: "{log}", seconds: {sleep_in_b}}}}}
          c: {{file: tasks.py, function: step, depends_on: [b], inputs: {{name: c, log: "{log}"}}}}
        """)


def statuses(url: str) -> dict[str, str]:
    storage = PostgresStorage(url)
    try:
        runs = storage.list_runs()
        return {name: t.status for name, t in storage.get_run(runs[0].id).tasks.items()} if runs else {}
    finally:
        storage.close()


def test_ork_run_keeps_its_state_in_postgresql(pg_url: str, folder: Path) -> None:
    chain(folder, 0)
    code, out, err = ork(["run", "wf.yaml"], folder, pg_url)
    assert code == 0, (out, err)
    assert not (folder / ".ork" / "ork.db").exists()  # nothing went to the SQLite default
    storage = PostgresStorage(pg_url)
    try:
        (run,) = storage.list_runs()
        full = storage.get_run(run.id)
        assert run.status == "success" and run.owner is None
        assert {n: (t.status, t.output) for n, t in full.tasks.items()} == {
            n: ("success", {"name": n, "size": 1000}) for n in "abc"
        }
        assert [line.line for line in storage.logs(run.id, "b") if "step" in line.line] == ["step b"]
    finally:
        storage.close()
    code, out, err = ork(["runs", "--json"], folder, pg_url)
    assert code == 0, (out, err)
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(run.id, "success")]
    code, out, err = ork(["runs", "show", run.id], folder, pg_url)  # reads excerpts of the outputs
    assert code == 0 and '"size": 1000' in out, (out, err)
    code, out, err = ork(["logs", run.id], folder, pg_url)
    assert code == 0 and "step c" in out, (out, err)


def test_kill_9_then_resume_runs_nothing_twice(pg_url: str, folder: Path) -> None:
    chain(folder, 60)
    log = folder / "executions.log"
    proc = ork_process(["run", "wf.yaml"], folder, pg_url)
    try:
        wait_for(lambda: log.exists() and "b" in log.read_text().split())
        wait_for(lambda: statuses(pg_url).get("b") == "running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert statuses(pg_url) == {"a": "success", "b": "running", "c": "pending"}

    code, out, err = ork(["resume"], folder, pg_url)
    assert code == 0, (out, err)
    assert "resumed" in out
    assert Counter(log.read_text().split()) == {"a": 1, "b": 2, "c": 1}
    storage = PostgresStorage(pg_url)
    try:
        (run,) = storage.list_runs()
        attempts = [(a.task, a.attempt, a.status, a.error) for a in storage.attempts(run.id)]
        assert run.status == "success" and run.owner is None
        assert ("b", 1, "failed", "ork stopped while this attempt was running") in attempts
        assert ("b", 2, "success", None) in attempts
    finally:
        storage.close()


def test_storage_in_ork_yaml_with_the_password_from_pgpassword(pg_url: str, folder: Path) -> None:
    """The documented team setup: the URL in ork.yaml, the password only in the environment (libpq reads it)."""
    parts = urlsplit(pg_url)
    write(folder / "ork.yaml", f"storage: postgresql://{parts.username}@127.0.0.1:{parts.port}{parts.path}\n")
    chain(folder, 0)
    code, out, err = ork(["run", "wf.yaml"], folder, None, env={"PGPASSWORD": parts.password or ""})
    assert code == 0, (out, err)
    assert not (folder / ".ork").exists()
    code, out, err = ork(["runs", "--json"], folder, None, env={"PGPASSWORD": parts.password or ""})
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["success"], (out, err)
    code, out, err = ork(["runs"], folder, None)  # no password anywhere: one clear error
    assert code == 2 and "password" in err and "Traceback" not in err, (out, err)


def test_killed_at_random_moments_loses_nothing_and_runs_no_success_twice(pg_url: str, folder: Path) -> None:
    """`ork run`, then `ork resume` again and again, each ended by SIGKILL or SIGTERM at a random moment."""
    import os
    import random

    from ork_core.testkit.crash import Interruption, interrupt_at_random

    log = folder / "executions.log"
    tasks = "".join(
        f"  t{i}: {{file: tasks.py, function: step, inputs: {{name: t{i}, log: '{log}', seconds: 0.05}}"
        + (f", depends_on: [t{i - 1}]" if i else "")
        + "}\n"
        for i in range(25)
    )
    write(folder / "wf.yaml", "name: long_chain\ntasks:\n" + tasks)
    # `seconds` sleeps only on a task's first execution (a marker file): a re-run is quick
    seed = int(os.environ.get("ORK_CRASH_SEED", random.randrange(1 << 30)))
    print(f"ORK_CRASH_SEED={seed}")
    succeeded: dict[str, int] = {}

    def executions() -> Counter[str]:
        return Counter(log.read_text().split()) if log.exists() else Counter()

    def after_round(result: Interruption) -> None:
        assert result.exit_code in (0, -signal.SIGKILL, 128 + signal.SIGTERM, -signal.SIGTERM), result
        counts = executions()
        for name, count in succeeded.items():
            assert counts[name] == count, f"{name} succeeded, then ran again (round {result})"
        for name, status in statuses(pg_url).items():
            if status == "success":
                succeeded.setdefault(name, counts[name])

    def run_exists(proc: object) -> bool:
        storage = PostgresStorage(pg_url)
        try:
            return bool(storage.list_runs())
        finally:
            storage.close()

    def finished() -> bool:
        return set(statuses(pg_url).values()) == {"success"}

    rounds = interrupt_at_random(
        lambda first: ork_process(["run", "wf.yaml"] if first else ["resume"], folder, pg_url),
        rng=random.Random(seed), rounds=5, delay=(0.1, 0.8), after_round=after_round,
        ready=lambda proc: bool(succeeded) or run_exists(proc), finished=finished, timeout=90,
    )
    print([(r.command, r.action, r.exit_code, round(r.seconds, 2)) for r in rounds])
    assert len(rounds) >= 2
    assert finished(), statuses(pg_url)
    counts = executions()
    assert all(1 <= counts[f"t{i}"] <= 1 + len(rounds) for i in range(25)), counts
    storage = PostgresStorage(pg_url)
    try:
        (run,) = storage.list_runs()
        assert run.status == "success" and run.owner is None
    finally:
        storage.close()


def test_several_ork_commands_on_an_empty_database_at_once(pg_url: str, folder: Path) -> None:
    """The first use of a new database by a team: every command works, the schema is made once."""
    import psycopg

    from ork_storage_postgres.migrations import SCHEMA_VERSION

    chain(folder, 0)
    procs = [ork_process(["run", "wf.yaml"], folder, pg_url) for _ in range(2)]
    procs += [ork_process(["runs", "--json"], folder, pg_url)]
    try:
        results = [(p.wait(120), p.communicate()[1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [code for code, _ in results] == [0] * 3, results
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM ork_schema ORDER BY version").fetchall() == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]
        assert conn.execute("SELECT count(*), count(DISTINCT status) FROM runs").fetchone() == (2, 1)
