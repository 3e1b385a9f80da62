"""``ork serve``: the HTTP API and web pages, on the same storage as every other command.

An optional part of ork (``pip install 'ork-core[web]'``): nothing here is imported by the
other commands, and `require` turns a missing FastAPI or uvicorn into one message naming
what to install.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ork_core.errors import OrkError

if TYPE_CHECKING:
    from ork_core.web.app import WebConfig

INSTALL_HINT = "pip install 'ork-core[web]'"


def require() -> None:
    """Raise OrkError saying what to install when the web dependencies are missing."""
    missing = []
    for module in ("fastapi", "uvicorn", "jinja2"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise OrkError(f"ork serve needs {', '.join(missing)}: {INSTALL_HINT}")


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine only (reads are then public)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_token(env: dict[str, str]) -> tuple[str, bool]:
    """The token mutations need: ``ORK_API_TOKEN``, or a new one (True: generated, print it)."""
    given = env.get("ORK_API_TOKEN", "").strip()
    if given:
        return given, False
    return secrets.token_urlsafe(24), True


def build_config(
    *, project: Any, plugins: Any, storage: Any, token: str, public_reads: bool, executor_rows: Callable[[], list[dict[str, Any]]],
) -> WebConfig:
    """The app's configuration for a project: how it loads workflows to trigger, and next ticks."""
    require()
    from ork_core.web.app import WebConfig

    def load(name_or_path: str) -> Any:
        from pathlib import Path

        from ork_core.actions import load_workflow_for_trigger

        path = Path(name_or_path)
        if not path.is_absolute() and (project.dir / path).is_file():  # a path is the project's, not the server's cwd
            path = project.dir / path
        if path.is_file() or path.suffix in (".yaml", ".yml"):
            # over HTTP, only the project's files (and allowed_path_roots): not any YAML the server can read
            resolved = path.resolve()
            roots = (project.dir.resolve(), *project.path_roots)
            if not any(resolved.is_relative_to(root) for root in roots):
                raise OrkError(f"{name_or_path}: not a workflow of this project (outside {project.dir})")
            name_or_path = str(resolved)
        return load_workflow_for_trigger(project, plugins, name_or_path, storage)

    return WebConfig(
        storage=storage, token=token, public_reads=public_reads, project=project, plugins=plugins,
        executor_rows=executor_rows, next_tick=_next_tick_function(), load_workflow=load, clock=_clock(),
    )


def _clock() -> Callable[[], float]:
    try:
        from ork_core.clock import Clock
    except ImportError:
        import time

        return time.time
    return Clock.from_env().now


def _next_tick_function() -> Callable[[Any, float], float | None] | None:
    """The next tick of a stored schedule, by `ork_core.schedules` (the scheduler's own cron rules)."""
    try:
        from ork_core.schedules import Schedule
    except ImportError:  # an ork without schedules: pages show the last tick only
        return None

    def next_tick(record: Any, now: float) -> float | None:
        try:
            schedule = Schedule.from_json(dict(record.spec))
        except (TypeError, ValueError, KeyError):
            schedule = Schedule(key=record.key, cron=record.cron, timezone=record.timezone)
        tick = schedule.next_after(now)
        return float(tick.ts) if tick is not None else None

    return next_tick


def serve(config: WebConfig, host: str, port: int, echo: Callable[[str], None]) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM: open requests end, then it exits)."""
    import uvicorn

    from ork_core.web.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(config), host=host, port=port, log_level="warning", access_log=False))
    shown = f"[{host}]" if ":" in host else host
    echo(f"serving on http://{shown}:{port}/  (reads {'public on this machine' if config.public_reads else 'need the token'}; Ctrl-C stops)")
    server.run()


__all__ = ["INSTALL_HINT", "api_token", "build_config", "is_loopback", "require", "serve"]
