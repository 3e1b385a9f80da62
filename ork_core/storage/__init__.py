"""State storage: the contract (`base`) and the built-in SQLite backend (`sqlite`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ork_core.errors import StorageError
from ork_core.registry import Registry
from ork_core.storage.base import Storage

DEFAULT_DB = Path(".ork") / "ork.db"


def storage_url(explicit: str | None, project_dir: Path, configured: str | None, env: Mapping[str, str] | None = None) -> str:
    """`--db`, then ORK_DB, then ork.yaml's `storage`, then `.ork/ork.db` beside ork.yaml."""
    env = os.environ if env is None else env
    url = explicit or env.get("ORK_DB") or configured
    if not url:
        return f"sqlite:///{project_dir / DEFAULT_DB}"
    if "://" not in url:
        path = Path(url)
        return f"sqlite:///{path if path.is_absolute() else (project_dir / path if configured == url else path.resolve())}"
    return url


def open_storage(url: str, registry: Registry) -> Storage:
    """Open the backend registered for the URL's scheme (``sqlite`` is built in)."""
    scheme = url.split("://", 1)[0] if "://" in url else "sqlite"
    try:
        reg = registry.get("storage", scheme)
    except LookupError as exc:
        from ork_core.secrets import register_url, strip_password

        register_url(url)  # the backend that would have used it is not there; the password stays hidden anyway
        raise StorageError(f"state database {strip_password(url)!r}: {exc}") from None
    cls = reg.load()
    storage = cls(url)
    if not isinstance(storage, Storage):
        raise StorageError(f"storage backend {reg.target_path} for {scheme!r} does not implement ork_core.storage.base.Storage")
    return storage


__all__ = ["DEFAULT_DB", "Storage", "open_storage", "storage_url"]
