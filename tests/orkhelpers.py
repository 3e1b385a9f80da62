"""Helpers for ork's own tests: files, fake distributions, running the CLI in-process or as a child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def make_dist(site: Path, name: str, version: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """A fake installed distribution: a *.dist-info with entry points, plus its modules."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    eps = "[ork]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    for rel, text in files.items():
        write(site / rel, text)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


class Cli:
    """Runs `ork` in-process (fast) with a given working folder and environment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
        from ork_core.cli import main

        self.monkeypatch.chdir(cwd)
        for key, value in (env or {}).items():
            self.monkeypatch.setenv(key, value)
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)



def ork_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    """Start `ork` as a real child process (for kill -9 tests)."""
    full_env = {**os.environ, "ORK_DISABLE_PLUGINS": "1", **(env or {})}
    full_env.pop("ORK_DB", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ork_core", *args], cwd=cwd, env=full_env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,  # type: ignore[call-overload]
    )


def run_in_process(folder: Path, workflow: Path, origin: Any = None) -> tuple[Any, Any]:
    """Run `workflow` of the project in `folder` through the real scheduler, in this process.

    `origin` (a RunOrigin) makes it a run for a tick, stored and given to the scheduler as
    `ork scheduler` would. Returns the RunResult and the RunRecord read back from
    `.ork/ork.db` (plugins not loaded).
    """
    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.scheduler import Scheduler, coerce_params, create_run, execute
    from ork_core.storage import open_storage
    from ork_core.workflow import load_workflow

    pm = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"})
    project = Project.load(folder, pm)
    compiled = load_workflow(workflow, project)
    storage = open_storage(f"sqlite:///{folder / '.ork' / 'ork.db'}", pm.registry)
    try:
        params = coerce_params(compiled, {})
        run_id = create_run(storage, compiled, params, origin=origin)
        scheduler = Scheduler(
            project=project, plugins=pm, storage=storage, workflow=compiled, run_id=run_id, params=params, origin=origin,
        )
        return execute(scheduler, handle_signals=False), storage.get_run(run_id)
    finally:
        storage.close()
