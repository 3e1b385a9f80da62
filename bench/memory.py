"""Peak memory of ork with one big task output, one huge log line, and 100 MB of stdout.

Each case runs the real CLI as a child process and reads the child's peak RSS from
``os.wait4`` (``ru_maxrss``), as bench/overhead.py does:

- ``run, small output``: a python task returning 1 — the floor every other case is read against;
- ``run, big output``: a python task returning an N MB string (an ork with ``max_output_bytes``
  fails this task: the output is over the cap);
- ``runs show`` / ``runs show --json``: a run holding an N MB output (an ork with
  ``max_output_bytes`` runs it with the cap raised above N, so there is one to show);
- ``run, big log line`` / ``logs``: a python task logging one N MB line;
- ``run, N MB stdout``: a process task printing N MB in 100-byte lines.

    .venv/bin/python bench/memory.py            # N = 100
    .venv/bin/python bench/memory.py --mb 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TASKS_PY = '''
import os

MB = int(os.environ["BENCH_MB"])


def small() -> int:
    return 1


def big() -> str:
    return "x" * (MB * 1_000_000)


def loud(ctx) -> int:
    ctx.log.info("y" * (MB * 1_000_000))
    return 1
'''


def workflow(folder: Path, name: str, function: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ntasks:\n  t:\n    module: tasks\n    function: {function}\n")
    return path


def peak(argv: list[str], folder: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """(peak RSS in MB, exit code, first stdout line) of one `ork` command."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ork_core", *argv], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    # A child's ru_maxrss starts from this process's RSS at fork: never hold a big line here.
    first = proc.stdout.readline(200).decode(errors="replace").strip()
    for _ in iter(lambda: proc.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    return usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), first


def has_output_cap() -> bool:
    from ork_core.project import ProjectFile

    return "max_output_bytes" in ProjectFile.model_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="size of the big output, log line and stdout, in MB")
    args = parser.parse_args()
    capped = has_output_cap()
    env = {**os.environ, "BENCH_MB": str(args.mb), "ORK_PLUGINS": "process"}
    env.pop("ORK_DB", None)
    print(f"python {sys.version.split()[0]}; N = {args.mb} MB; this ork {'has' if capped else 'has no'} max_output_bytes")
    print(f"{'case':28} {'exit':>4} {'peak RSS MB':>11}")
    with tempfile.TemporaryDirectory(prefix="ork-bench-memory-") as tmp:
        folder = Path(tmp)
        (folder / "tasks.py").write_text(TASKS_PY)
        (folder / "ork.yaml").write_text("")

        def row(label: str, argv: list[str]) -> str:
            rss, code, first = peak(argv, folder, env)
            print(f"{label:28} {code:>4} {rss:>11.1f}", flush=True)
            return first.removeprefix("run ").split()[0] if first.startswith("run ") else ""

        row("run, small output", ["run", "-q", str(workflow(folder, "small", "small"))])
        stored = row(f"run, {args.mb} MB output", ["run", "-q", str(workflow(folder, "big", "big"))])
        if capped:  # store one anyway, to measure showing it
            (folder / "ork.yaml").write_text(f"max_output_bytes: {(args.mb + 10) * 1_000_000}\n")
            stored = row(f"run, {args.mb} MB output, cap raised", ["run", "-q", str(folder / "big.yaml")])
            (folder / "ork.yaml").write_text("")
        row("runs show", ["runs", "show", stored])
        row("runs show --json", ["runs", "show", stored, "--json"])
        loud = row(f"run, {args.mb} MB log line", ["run", "-q", str(workflow(folder, "loud", "loud"))])
        row("logs", ["logs", loud])
        folder = folder / "stdout"  # a fresh state database: the rows above do not weigh on this one
        folder.mkdir()
        (folder / "ork.yaml").write_text("")
        (folder / "stdout.yaml").write_text(
            "name: stdout\ntasks:\n  t:\n    executor: process\n    shell: true\n"
            f"    command: \"yes 'a line of output, padded to be one hundred bytes long ....................................' | head -c {args.mb * 1_000_000}\"\n"
        )
        row(f"run, {args.mb} MB stdout", ["run", "-q", str(folder / "stdout.yaml")])


if __name__ == "__main__":
    main()
