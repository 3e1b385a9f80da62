"""Drop the files only the other kind of executor uses."""

from __future__ import annotations

from pathlib import Path

KIND = {{ cookiecutter.kind | tojson }}
PACKAGE = {{ cookiecutter.__package_name | tojson }}

DEFERRED_ONLY = [f"{PACKAGE}/client.py", f"{PACKAGE}/tracker.py", "tests/job_server.py"]

if KIND != "deferred":
    for relative in DEFERRED_ONLY:
        Path(relative).unlink()
