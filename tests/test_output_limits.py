"""Big outputs and long log lines: capped where they are stored, and shown without loading them whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orkhelpers import run_in_process, write
from ork_core.plugins import build_plugin_manager
from ork_core.project import Project
from ork_core.scheduler import RunResult
from ork_core.storage import open_storage
from ork_core.storage.base import RunRecord

MAX_LOG_LINE = 64 * 1024  # ork_core.context.MAX_LOG_LINE
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024  # ork_core.project.DEFAULT_MAX_OUTPUT_BYTES

TASKS = '''
def text(n: int) -> str:
    return "a" * n

def after(upstream) -> int:
    return len(upstream)

def loud(ctx) -> int:
    ctx.log.info("a" * 200_000 + "\\nshort\\n" + "b" * 70_000)
    ctx.log.line("stdout", "c" * 100_000)
    return 1

def fail_long() -> None:
    raise ValueError("e" * 10_000)

def fail_huge() -> None:
    raise ValueError("h" * 1_000_000)
'''


def run(folder: Path, tasks: str, ork_yaml: str = "") -> tuple[RunResult, RunRecord]:
    write(folder / "tasks.py", TASKS)
    write(folder / "ork.yaml", ork_yaml)
    return run_in_process(folder, write(folder / "wf.yaml", "name: wf\ntasks:\n" + tasks))


@pytest.fixture
def folder(project: Path, fresh_modules: None) -> Path:
    return project


def text_task(name: str, n: int, **extra: str) -> str:
    lines = [f"  {name}:", "    module: tasks", "    function: text", f"    inputs: {{n: {{const: {n}}}}}"]
    return "\n".join(lines + [f"    {k}: {v}" for k, v in extra.items()]) + "\n"


def test_an_output_over_max_output_bytes_fails_the_task_saying_what_to_do(folder: Path) -> None:
    tasks = text_task("fits", 998) + text_task("big", 999) + "  after:\n    module: tasks\n    function: after\n    depends_on: [big]\n"
    result, record = run(folder, tasks, "max_output_bytes: 1000\n")
    assert result.status == "failed"
    assert record.tasks["fits"].status == "success" and record.tasks["fits"].output == "a" * 998  # 1000 bytes of JSON
    assert record.tasks["big"].status == "failed"
    assert record.tasks["big"].output is None
    assert record.tasks["big"].error == (
        "output is 1,001 bytes as JSON, over the limit of 1,000 (max_output_bytes in ork.yaml); "
        "write big results to a file (e.g. in ctx.ensure_artifact_dir()) and return its path"
    )
    assert record.tasks["after"].status == "upstream_failed"


def test_the_default_cap_is_one_mebibyte(folder: Path) -> None:
    from ork_core import project

    assert project.DEFAULT_MAX_OUTPUT_BYTES == DEFAULT_MAX_OUTPUT_BYTES
    result, record = run(folder, text_task("fits", DEFAULT_MAX_OUTPUT_BYTES - 2) + text_task("big", DEFAULT_MAX_OUTPUT_BYTES - 1))
    assert record.tasks["fits"].status == "success"
    assert record.tasks["big"].status == "failed"
    assert "over the limit of 1,048,576 (max_output_bytes in ork.yaml)" in (record.tasks["big"].error or "")


def test_a_bad_max_output_bytes_is_a_config_error(folder: Path) -> None:
    from ork_core.errors import ProjectError

    write(folder / "ork.yaml", "max_output_bytes: 0\n")
    with pytest.raises(ProjectError) as caught:
        Project.load(folder, build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}))
    assert "max_output_bytes" in str(caught.value)


def test_a_long_log_line_is_cut_with_a_note(folder: Path) -> None:
    result, record = run(folder, "  loud:\n    module: tasks\n    function: loud\n")
    assert result.status == "success"
    storage = open_storage(f"sqlite:///{folder / '.ork' / 'ork.db'}", build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}).registry)
    lines = [line.line for line in storage.logs(record.id)]
    storage.close()
    from ork_core import context

    assert context.MAX_LOG_LINE == MAX_LOG_LINE
    assert lines == [
        "a" * MAX_LOG_LINE + f"… [{200_000 - MAX_LOG_LINE:,} more characters not kept]",
        "short",
        "b" * MAX_LOG_LINE + f"… [{70_000 - MAX_LOG_LINE:,} more characters not kept]",
        "c" * MAX_LOG_LINE + f"… [{100_000 - MAX_LOG_LINE:,} more characters not kept]",
    ]


def test_get_run_with_an_excerpt_reads_only_the_start_of_outputs_and_errors(folder: Path) -> None:
    tasks = text_task("out", 5000) + "  bad:\n    module: tasks\n    function: fail_long\n"
    _, record = run(folder, tasks)
    storage = open_storage(f"sqlite:///{folder / '.ork' / 'ork.db'}", build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}).registry)
    shown = storage.get_run(record.id, excerpt=50)
    storage.close()
    assert shown.tasks["out"].output is None
    assert shown.tasks["out"].output_excerpt == json.dumps("a" * 5000)[:50]
    assert shown.tasks["bad"].error == ("ValueError: " + "e" * 10_000)[:50]
    assert shown.tasks["bad"].output_excerpt is None
    assert record.tasks["out"].output == "a" * 5000 and record.tasks["out"].output_excerpt is None


def test_a_huge_error_is_stored_cut_with_a_note(folder: Path) -> None:
    result, record = run(folder, "  bad:\n    module: tasks\n    function: fail_huge\n")
    assert result.status == "failed"
    cut = 64 * 1024  # ork_core.scheduler.MAX_ERROR
    text = "ValueError: " + "h" * 1_000_000
    assert record.tasks["bad"].error == text[:cut] + f"… [{len(text) - cut:,} more characters not kept]"


def _peak_rss_mb(args: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "ORK_DISABLE_PLUGINS": "1"}
    env.pop("ORK_DB", None)
    proc = subprocess.Popen([sys.executable, "-m", "ork_core", *args], cwd=cwd, env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read(4096)  # a short read: this process's RSS is where a forked child starts
    while proc.stdout.read(1 << 16):
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    assert os.waitstatus_to_exitcode(status) == 0, out
    return usage.ru_maxrss / 1024, out.decode(errors="replace")


def test_runs_show_does_not_load_a_big_output(folder: Path) -> None:
    # 40 MB stored (the cap raised for it): showing its first 120 characters must not cost 40 MB, let alone 200
    result, record = run(folder, text_task("small", 1) + text_task("big", 40_000_000), "max_output_bytes: 50000000\n")
    assert result.status == "success"
    _, small = run(folder / "small", text_task("small", 1))
    baseline, _ = _peak_rss_mb(["runs", "show", small.id], folder / "small")
    shown, out = _peak_rss_mb(["runs", "show", record.id], folder)
    assert '"aaaaaaaa' in out
    assert shown - baseline < 20, f"ork runs show took {shown:.0f} MB for a 40 MB output, {baseline:.0f} MB for a small one"


def test_a_task_logging_100_mb_keeps_ork_memory_flat(folder: Path) -> None:
    # 1,600 lines of 64 KiB, made one at a time (the task itself stays small): buffered log lines
    # are written every few MB, not held until the task ends
    write(
        folder / "loud.py",
        """
        def loud(ctx) -> int:
            for i in range(1600):
                ctx.log.line("stdout", str(i % 10) * 65536)
            return 1
        """,
    )
    write(folder / "ork.yaml", "")
    write(folder / "quiet.yaml", "name: quiet\ntasks:\n  t: {module: tasks, function: after}\n")
    write(folder / "loud.yaml", "name: loud\ntasks:\n  t: {module: loud, function: loud}\n")
    write(folder / "tasks.py", TASKS)
    baseline, _ = _peak_rss_mb(["run", "-q", "quiet.yaml"], folder)
    loud, out = _peak_rss_mb(["run", "-q", "loud.yaml"], folder)
    assert "success" in out
    assert loud - baseline < 40, f"ork run took {loud:.0f} MB logging 100 MB, {baseline:.0f} MB for a quiet task"


def test_capped_lines_split_where_splitlines_does() -> None:
    from ork_core.context import _capped_lines, cap_line

    for text in ["x" * 70_000 + "\r\nb\rc\x1cd\u2028e\n\nf", "y" * 70_000, "short\r\nlines\n", ""]:
        assert list(_capped_lines(text)) == [cap_line(line) for line in text.splitlines() or [""]], text[-20:]
