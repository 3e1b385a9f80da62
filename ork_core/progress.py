"""Showing a run as it goes: a live rich display on a terminal, plain lines otherwise.

Plain lines are for logs and CI: one line per meaningful change, greppable, no escape codes.
The summary is a table for small runs and counts plus the failures for large ones, so a
10,000-task run does not print 10,000 rows at the end.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from ork_core.display import first_line, line, visible
from ork_core.storage.base import FINAL_TASK_STATUSES, RunRecord
from ork_core.workflow import CompiledWorkflow

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

FINAL = FINAL_TASK_STATUSES
SHOWN = {"running", "deferred", "retrying", "success", "failed", "skipped", "upstream_failed", "cancelled"}
STYLE = {
    "success": "green", "failed": "red", "upstream_failed": "red", "cancelled": "yellow", "skipped": "dim",
    "running": "cyan", "deferred": "magenta", "retrying": "yellow", "queued": "blue", "pending": "dim",
    "stopped": "yellow",
}
TABLE_LIMIT = 40


class PlainReporter:
    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.out = stream or sys.stdout

    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None:
        if not self.quiet:
            verb = "resuming" if resumed else "running"
            self.out.write(f"{verb} {visible(workflow.name)}: {len(workflow.tasks)} task(s)\n")

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        if self.quiet or status not in SHOWN:
            return
        text = f"{time.strftime('%H:%M:%S')} {task} {status}"
        if attempt > 1 and status in ("running", "deferred"):
            text += f" (attempt {attempt})"
        if error and status in ("failed", "retrying", "upstream_failed"):
            text += f": {first_line(error)}"
        self.out.write(visible(text) + "\n")

    def run_finished(self, run_id: str, status: str) -> None:
        pass

    def summary(self, record: RunRecord) -> None:
        if self.quiet:  # one plain line; rich is not even imported
            self.out.write(summary_line(record) + "\n")
            return
        from rich.console import Console

        print_summary(Console(file=self.out, highlight=False), record, self.quiet)


class RichReporter(PlainReporter):
    """A progress bar plus a line per finished task, on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        super().__init__(quiet)
        self.console = Console()
        self.progress: Progress | None = None
        self.bar: Any = None
        self.done = 0

    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[state]}", markup=False), console=self.console, transient=True,
        )
        self.progress.start()
        self.bar = self.progress.add_task(visible(workflow.name), total=len(workflow.tasks), state="")
        self.active: dict[str, str] = {}

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        assert self.progress is not None
        if status in FINAL:
            self.done += 1
            if not self.quiet and (status != "success" or self.done <= 200):
                style = STYLE.get(status, "")
                detail = f": {first_line(error)}" if error and status != "success" else ""
                self.progress.console.print(line((f"{status:>15}", style), f" {task}{detail}"))
        elif status == "retrying" and not self.quiet:
            self.progress.console.print(line((f"{'retrying':>15}", "yellow"), f" {task}: {first_line(error)}"))
        if status in ("running", "deferred"):
            self.active[task] = status
        else:
            self.active.pop(task, None)
        waiting = sum(1 for s in self.active.values() if s == "deferred")
        state = f"{len(self.active) - waiting} running" + (f", {waiting} deferred" if waiting else "")
        self.progress.update(self.bar, completed=self.done, state=state)

    def run_finished(self, run_id: str, status: str) -> None:
        if self.progress is not None:
            self.progress.stop()

    def summary(self, record: RunRecord) -> None:
        print_summary(self.console, record, self.quiet)


def summary_line(record: RunRecord) -> str:
    """``run ID STATUS in N s``."""
    took = f" in {record.duration:.2f}s" if record.duration is not None else ""
    return f"run {record.id} {record.status}{took}"


def print_summary(console: Console, record: RunRecord, quiet: bool) -> None:
    from rich.table import Table

    from ork_core.display import cell

    tasks = list(record.tasks.values())
    if not quiet and len(tasks) <= TABLE_LIMIT:
        table = Table("task", "status", "attempts", "duration")
        for t in tasks:
            duration = f"{t.duration:.2f}s" if t.duration is not None else "-"
            table.add_row(cell(t.name), cell(t.status, STYLE.get(t.status, "")), str(t.attempt), duration)
        console.print(table)
    elif not quiet:
        counts = Counter(t.status for t in tasks)
        console.print(line("  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))))
        bad = [t for t in tasks if t.status in ("failed",)][:20]
        for t in bad:
            console.print(line(("failed", "red"), f" {t.name}: {first_line(t.error)}"))
    took = f" in {record.duration:.2f}s" if record.duration is not None else ""
    console.print(line(f"run {record.id} ", (record.status, STYLE.get(record.status, "")), took))


def make_reporter(quiet: bool = False) -> PlainReporter:
    if sys.stdout.isatty():
        return RichReporter(quiet)
    return PlainReporter(quiet)
