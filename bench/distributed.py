"""ork on several processes: schedulers and workers sharing one database.

Two cases, each a fresh database and real `ork scheduler` / `ork worker` processes on this
machine, every task a no-op python function on a ``queue:`` (so it runs on a worker):

- **wide**: one run of a workflow of N independent tasks (default 5,000);
- **many**: R runs (default 200) of a 20-task workflow (a root, 18 tasks after it, a join),
  all triggered at once.

Each case runs on PostgreSQL with 2 schedulers and 4 workers, and on the embedded SQLite with
one scheduler and the same 4 workers, in the same invocation. Afterwards storage says, per
case: wall time from the trigger to the last run's end, tasks per second end to end, and the
delay from "dependencies done" (the last upstream's work item finished; for a root, its run
started) to "attempt started" (a worker claimed the work item), as median and p99.

PostgreSQL is a throwaway cluster started for the bench (``scripts/pg-cluster.sh``, with
``fsync`` on, unlike the tests' cluster) unless ``--pg URL`` names a server whose user may
create databases. Each line also gives the CPU seconds the schedulers, the workers and the
whole machine (PostgreSQL included) spent, and PostgreSQL's committed transactions per task.

    python bench/distributed.py                      # both cases, 3 runs each, medians
    python bench/distributed.py --runs 1 --wide 2000 --many 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ORK = [sys.executable, "-m", "ork_core"]
QUEUE = "bench"

TASKS_PY = """
def noop() -> None:
    return None

def join(upstream) -> int:
    return len(upstream)
"""

TRIGGER_PY = """
import sys, time
from pathlib import Path
from ork_core.actions import load_workflow_for_trigger, trigger
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.storage import open_storage
plugins = build_plugin_manager()
project = Project.load(Path.cwd(), plugins)
storage = open_storage(sys.argv[1], plugins.registry)
workflow = load_workflow_for_trigger(project, plugins, sys.argv[2], storage)
started = time.time()
for _ in range(int(sys.argv[3])):
    trigger(storage, workflow, {})
print(started)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def write_project(folder: Path, wide: int) -> None:
    (folder / "tasks.py").write_text(TASKS_PY)
    (folder / "ork.yaml").write_text(f"workflows: [flows/*.yaml]\nexecutors:\n  python:\n    type: python\n    queue: {QUEUE}\n")
    (folder / "flows").mkdir()
    lines = ["name: wide", "tasks:"]
    for i in range(wide):
        lines += [f"  t{i}:", "    module: tasks", "    function: noop"]
    (folder / "flows" / "wide.yaml").write_text("\n".join(lines) + "\n")
    lines = ["name: many", "tasks:", "  root:", "    module: tasks", "    function: noop"]
    for i in range(18):
        lines += [f"  m{i}:", "    module: tasks", "    function: noop", "    depends_on: [root]"]
    lines += ["  join:", "    module: tasks", "    function: join",
              "    depends_on: [" + ", ".join(f"m{i}" for i in range(18)) + "]"]
    (folder / "flows" / "many.yaml").write_text("\n".join(lines) + "\n")


def upstream_of(workflow: str, task: str) -> list[str]:
    if workflow == "many":
        if task == "root":
            return []
        return ["root"] if task.startswith("m") else [f"m{i}" for i in range(18)]
    return []


class Database:
    """One fresh database per measurement: a SQLite file, or a PostgreSQL database on the server."""

    def __init__(self, pg_admin: str | None, folder: Path) -> None:
        self.pg_admin = pg_admin
        self.folder = folder
        self.count = 0

    def fresh(self, backend: str) -> str:
        self.count += 1
        if backend == "sqlite":
            path = self.folder / f"bench-{self.count}.db"
            return f"sqlite:///{path}"
        import psycopg

        assert self.pg_admin is not None
        name = f"ork_bench_{os.getpid()}_{self.count}"
        try:
            with psycopg.connect(self.pg_admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            raise SystemExit(f"--pg: cannot create a database there: {' '.join(str(exc).split())}") from None
        base, _, query = self.pg_admin.partition("?")
        return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

    def rows(self, url: str, sql: str) -> list[tuple[Any, ...]]:
        if url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)) as db:
                return db.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchall()

    def commits(self, url: str) -> int:
        """Transactions committed in the database so far (PostgreSQL's statistics; 0 for SQLite)."""
        if url.startswith("sqlite:///"):
            return 0
        import psycopg

        name = url.rsplit("/", 1)[1].split("?")[0]
        with psycopg.connect(self.pg_admin or "", autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
        return int(row[0]) if row else 0

    def drop(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            for suffix in ("", "-wal", "-shm"):
                Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
            return
        import psycopg

        with psycopg.connect(self.pg_admin or "", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its waited-for children included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every core spent not idle, from /proc/stat (postgres and everything else)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


@dataclass
class Result:
    wall: float
    tasks: int
    delays: list[float]
    cpu: dict[str, float]
    commits: int = 0

    @property
    def rate(self) -> float:
        return self.tasks / self.wall


class Processes:
    """The schedulers and workers of one measurement, their output in files; stopped by their pids."""

    def __init__(self, project: Path, url: str) -> None:
        self.project = project
        self.env = {**os.environ, "ORK_DB": url, "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hosts: list[str] = []

    def start(self, host: str, *args: str) -> None:
        log = (self.project / f"{host}.log").open("wb")
        self.procs.append(subprocess.Popen([*ORK, *args], cwd=self.project, env={**self.env, "ORK_HOST": host},
                                           stdout=log, stderr=subprocess.STDOUT))
        self.hosts.append(host)
        log.close()

    def check(self) -> None:
        for proc, host in zip(self.procs, self.hosts):
            if proc.poll() is not None:
                log = (self.project / f"{host}.log").read_text()[-2000:]
                raise SystemExit(f"ork process {host} ended early (exit {proc.returncode}):\n{log}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds of the schedulers and of the workers, so far."""
        out = {"scheduler": 0.0, "worker": 0.0}
        for proc, host in zip(self.procs, self.hosts):
            with contextlib.suppress(OSError):
                out["scheduler" if host.startswith("sched") else "worker"] += cpu_seconds(proc.pid)
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(db: Database, backend: str, case: str, args: argparse.Namespace, project: Path) -> Result:
    url = db.fresh(backend)
    schedulers = args.schedulers if backend == "postgresql" else 1
    procs = Processes(project, url)
    try:
        subprocess.run([*ORK, "runs"], cwd=project, env=procs.env, check=True, stdout=subprocess.DEVNULL)  # migrate
        for i in range(schedulers):
            procs.start(f"sched{i}", "scheduler", "--poll", str(args.poll))
        for i in range(args.workers):
            procs.start(f"worker{i}", "worker", "--queue", QUEUE, "--concurrency", str(args.concurrency))
        deadline = time.time() + 60
        while len(db.rows(url, "SELECT id FROM workers")) < args.workers:
            procs.check()
            if time.time() > deadline:
                raise SystemExit("the workers did not register within 60 s")
            time.sleep(0.1)
        time.sleep(1.0)  # the schedulers are up and idle
        count = 1 if case == "wide" else args.many
        out = subprocess.run([sys.executable, "-c", TRIGGER_PY, url, case, str(count)], cwd=project, env=procs.env,
                             check=True, capture_output=True, text=True)
        triggered = float(out.stdout.strip().splitlines()[-1])
        cpu_before, busy_before = procs.cpu(), machine_busy_seconds()
        commits_before = db.commits(url)
        deadline = time.time() + args.timeout
        while True:
            procs.check()
            left = db.rows(url, "SELECT count(*) FROM runs WHERE status NOT IN ('success','failed','cancelled')")[0][0]
            if not left:
                break
            if time.time() > deadline:
                raise SystemExit(f"{left} runs unfinished after {args.timeout} s; logs in {project}")
            time.sleep(0.2)
        bad = db.rows(url, "SELECT id, status, error FROM runs WHERE status <> 'success'")
        if bad:
            raise SystemExit(f"runs did not succeed: {bad[:3]}")
        cpu = {k: v - cpu_before[k] for k, v in procs.cpu().items()}
        cpu["machine"] = machine_busy_seconds() - busy_before
        finished = db.rows(url, "SELECT max(finished_at) FROM runs")[0][0]
        result = Result(finished - triggered, *delays(db, url), cpu)
        procs.stop()
        time.sleep(1.0)  # the server's statistics are sent at most once a second
        result.commits = db.commits(url) - commits_before
        return result
    finally:
        procs.stop()
        db.drop(url)


def delays(db: Database, url: str) -> tuple[int, list[float]]:
    started = dict(db.rows(url, "SELECT id, started_at FROM runs"))
    workflow = dict(db.rows(url, "SELECT id, workflow_name FROM runs"))
    items = db.rows(url, "SELECT run_id, task, claimed_at, finished_at FROM work_items WHERE status = 'success'")
    done = {(run, task): fin for run, task, _, fin in items}
    out: list[float] = []
    for run, task, claimed, _ in items:
        ups = upstream_of(workflow[run], task)
        ready = max(done[(run, u)] for u in ups) if ups else started[run]
        out.append(claimed - ready)
    return len(items), out


@contextlib.contextmanager
def postgres(explicit: str | None) -> Iterator[str]:
    if explicit:
        yield explicit
        return
    # unlike the tests' cluster, one that pays for durable commits, as a real server does
    env = {**os.environ, "ORK_PG_OPTIONS": f"{os.environ.get('ORK_PG_OPTIONS', '')} -c fsync=on"}
    out = subprocess.run(["bash", str(REPO / "scripts" / "pg-cluster.sh"), "start"], check=True,
                         capture_output=True, text=True, env=env).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line)
    env = {k: v.strip("'\"") for k, v in env.items()}
    try:
        yield env["ORK_TEST_PG"]
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "pg-cluster.sh"), "stop", env["ORK_TEST_PG_DIR"]], check=False)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive, default=3)
    parser.add_argument("--wide", type=positive, default=5000, help="tasks of the one-run case")
    parser.add_argument("--many", type=positive, default=200, help="runs of the 20-task workflow")
    parser.add_argument("--schedulers", type=positive, default=2)
    parser.add_argument("--workers", type=positive, default=4)
    parser.add_argument("--concurrency", type=positive, default=8, help="--concurrency of each worker")
    parser.add_argument("--poll", type=float, default=1.0, help="--poll of each scheduler")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--pg", help="a PostgreSQL URL whose user may create databases (default: a throwaway cluster)")
    parser.add_argument("--cases", nargs="+", default=["wide", "many"], choices=["wide", "many"])
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.runs} runs per cell, medians; "
          f"{args.workers} workers x concurrency {args.concurrency}; PostgreSQL with {args.schedulers} schedulers, "
          "SQLite with 1")
    with postgres(args.pg if "postgresql" in args.backends else "unused") as pg, \
            tempfile.TemporaryDirectory(prefix="ork-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        write_project(project, args.wide)
        db = Database(pg, Path(tmp))
        print(f"{'case':5} {'backend':10} {'tasks':>6} {'wall s':>7} {'tasks/s':>8} {'ready->start median ms':>23}"
              f" {'p99 ms':>8}   CPU s: {'schedulers':>10} {'workers':>8} {'machine':>8}  {'commits/task':>12}")
        rates: dict[tuple[str, str], float] = {}
        for case in args.cases:
            for backend in args.backends:
                results = [measure(db, backend, case, args, project) for _ in range(args.runs)]
                wall = statistics.median(r.wall for r in results)
                rate = statistics.median(r.rate for r in results)
                med = statistics.median(statistics.median(r.delays) for r in results) * 1000
                p99 = statistics.median(percentile(r.delays, 0.99) for r in results) * 1000
                rates[(case, backend)] = rate
                cpu = {k: statistics.median(r.cpu[k] for r in results) for k in results[0].cpu}
                print(f"{case:5} {backend:10} {results[0].tasks:>6} {wall:>7.2f} {rate:>8.0f} {med:>23.0f} {p99:>8.0f}"
                      f"          {cpu['scheduler']:>10.2f} {cpu['worker']:>8.2f} {cpu['machine']:>8.2f}"
                      f"  {statistics.median(r.commits for r in results) / results[0].tasks:>12.2f}", flush=True)
            if len(args.backends) == 2:
                print(f"{case:5} PostgreSQL/SQLite tasks/s: {rates[(case, 'postgresql')] / rates[(case, 'sqlite')]:.2f}")
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
