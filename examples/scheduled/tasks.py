"""The functions behind workflow.yaml: each run works on the hour its logical date names."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from ork import Context

HERE = Path(__file__).parent


class Window(BaseModel):
    start: str
    end: str


class Partition(BaseModel):
    path: str
    views: int


def hour_window(start: str | None, end: str | None, logical_date: str) -> Window:
    """The interval a scheduled run covers; for a run with no tick (``ork run``), the last complete hour.

    A manual run has no interval (``start`` is None) and its logical date is when it was
    created, so the hour before that, cut to the hour, is what "run it now" means here.
    """
    if start is not None and end is not None:
        return Window(start=start, end=end)
    hour_end = datetime.fromisoformat(logical_date).replace(minute=0, second=0, microsecond=0)
    return Window(start=(hour_end - timedelta(hours=1)).isoformat(), end=hour_end.isoformat())


def load_partition(window: Window, source: str, ctx: Context) -> Partition:
    """Count the views in [start, end) and write them to out/views/hour=<start>/part.json."""
    start, end = datetime.fromisoformat(window.start), datetime.fromisoformat(window.end)
    with open(HERE / source, newline="") as fh:
        views = [row for row in csv.DictReader(fh) if start <= datetime.fromisoformat(row["at"]) < end]
    # One folder per hour, named by the interval's start: rewriting it is the whole "retry".
    folder = HERE / "out" / "views" / f"hour={start.strftime('%Y-%m-%dT%H%z')}"
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / "part.json"
    pages: dict[str, int] = {}
    for row in views:
        pages[row["page"]] = pages.get(row["page"], 0) + 1
    part.write_text(json.dumps({"start": window.start, "end": window.end, "trigger": ctx.trigger, "pages": pages}, indent=2))
    ctx.log.info("%d views from %s to %s -> %s", len(views), window.start, window.end, part.relative_to(HERE))
    return Partition(path=str(part.relative_to(HERE)), views=len(views))
