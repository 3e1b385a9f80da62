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
}
TABLE_LIMIT = 40


class PlainReporter:
    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.out = stream or sys.stdout

    def run_started(self, run_id: str, workflow: CompiledWorkflow, resumed: bool) -> None:
        if not self.quiet:
            verb = "resuming" if resumed else "running"
            self.out.write(f"{verb} {workflow.name}: {len(workflow.tasks)} task(s)\n")

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        if self.quiet or status not in SHOWN:
            return
        line = f"{time.strftime('%H:%M:%S')} {task} {status}"
        if attempt > 1 and status in ("running", "deferred"):
            line += f" (attempt {attempt})"
        if error and status in ("failed", "retrying", "upstream_failed"):
            line += f": {error.splitlines()[0] if error.strip() else error}"
        self.out.write(line + "\n")

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
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[state]}"), console=self.console, transient=True,
        )
        self.progress.start()
        self.bar = self.progress.add_task(workflow.name, total=len(workflow.tasks), state="")
        self.active: dict[str, str] = {}

    def task_changed(self, task: str, status: str, attempt: int, error: str | None) -> None:
        assert self.progress is not None
        if status in FINAL:
            self.done += 1
            if not self.quiet and (status != "success" or self.done <= 200):
                style = STYLE.get(status, "")
                detail = f": {error.splitlines()[0]}" if error and status != "success" else ""
                self.progress.console.print(f"[{style}]{status:>15}[/] {task}{detail}", highlight=False)
        elif status == "retrying" and not self.quiet:
            self.progress.console.print(f"[yellow]{'retrying':>15}[/] {task}: {(error or '').splitlines()[0] if error else ''}", highlight=False)
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


def summary_line(record: RunRecord, style: str = "") -> str:
    """``run ID STATUS in N s``; with a rich `style`, the status is marked up in it."""
    took = f" in {record.duration:.2f}s" if record.duration is not None else ""
    status = f"[{style}]{record.status}[/]" if style else record.status
    return f"run {record.id} {status}{took}"


def print_summary(console: Console, record: RunRecord, quiet: bool) -> None:
    from rich.table import Table

    tasks = list(record.tasks.values())
    style = STYLE.get(record.status, "")
    if not quiet and len(tasks) <= TABLE_LIMIT:
        table = Table("task", "status", "attempts", "duration")
        for t in tasks:
            s = STYLE.get(t.status, "")
            table.add_row(t.name, f"[{s}]{t.status}[/]" if s else t.status, str(t.attempt), f"{t.duration:.2f}s" if t.duration is not None else "-")
        console.print(table)
    elif not quiet:
        counts = Counter(t.status for t in tasks)
        console.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        bad = [t for t in tasks if t.status in ("failed",)][:20]
        for t in bad:
            console.print(f"[red]failed[/] {t.name}: {(t.error or '').splitlines()[0] if t.error else ''}", highlight=False)
    console.print(summary_line(record, style), highlight=False)


def make_reporter(quiet: bool = False) -> PlainReporter:
    if sys.stdout.isatty():
        return RichReporter(quiet)
    return PlainReporter(quiet)
