"""One Ray connection per ork process, shared by every Ray executor that needs a driver.

`ray.init` is process-wide: two executors of one run cannot each have their own. So the
first executor connects, later ones share that connection when they name the same cluster
(and are refused with a clear message when they name another one), and the last one to
close disconnects — and, for ``address: local``, so ends the throwaway cluster it started.
A driver connected by someone else (a test, a notebook) is used and never shut down.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ork import TaskError

QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0"}
"""Set (unless already set) before Ray is imported: no usage report, no prompt on a server."""

_lock = threading.Lock()
_users = 0
_ours = False
_key: tuple[str, str | None] | None = None


def import_ray() -> Any:
    """Import Ray on first use, with a message that names the fix when it is missing."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    try:
        import ray
    except ImportError as exc:
        raise TaskError(f"the Ray executors need the 'ray' package ({exc}); pip install 'ork-executor-ray'") from None
    return ray


def acquire(address: str, namespace: str | None) -> Any:
    """Connect (or join the existing connection) and return the `ray` module."""
    global _users, _ours, _key
    ray = import_ray()
    with _lock:
        if _users and _key != (address, namespace):
            raise TaskError(
                f"this ork process is already connected to Ray at {_key[0]!r} (namespace {_key[1]!r}) "
                f"and cannot also use {address!r} (namespace {namespace!r}): Ray allows one cluster per process"
                if _key else "Ray is already connected"
            )
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": False, "configure_logging": False}
            if address == "local":
                kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise TaskError(f"cannot connect to Ray at {address!r}: {exc}") from None
            _ours = True
        elif not _users:
            _ours = False  # connected by the program that embeds ork: not ours to shut down
        _users += 1
        _key = (address, namespace)
        return ray


def release() -> None:
    """One user is done; the last one disconnects a connection this module made."""
    global _users, _ours, _key
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users:
            return
        _key = None
        if _ours:
            import ray

            ray.shutdown()
            _ours = False
