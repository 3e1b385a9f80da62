"""Keeping secrets out of what ork writes and prints: one set of secret values, one `mask`.

A secret reaches ork through configuration — ``${API_TOKEN}`` in ork.yaml, a password in a
URL, an ``Authorization`` header a plugin sends — and leaks back out through text nobody
meant to hold it: a service's error body that echoes the request headers, a URL in a
deferred handle, a validation message quoting a bad value. So ork does not try to keep
secrets out of every message; it masks them at the boundaries instead:

- the storage write batch (`mask_batch`): errors, outputs, handles, links, poll errors and
  log lines, whatever the backend;
- everything the CLI prints (`ork_core.display.visible`).

What counts as a secret (`register`): the value of a ``${VAR}`` interpolated into an
executor's config where the field is secret-typed (pydantic ``SecretStr``), or where its
name, a name on its path, or the variable's name looks like a credential (token, password,
secret, key, auth, credential, cookie …); the values of credential headers and URL
passwords plugins register (``ork.register_secret``). ``${GCP_PROJECT}`` in ``project:`` is
not one, so errors keep naming the project. Any ``scheme://user:password@host`` is shown as
``scheme://user:***@host``, registered or not.

The set belongs to the process and only grows: masking one value too many in a test run
is harmless, forgetting one is not. Values shorter than `MIN_LENGTH` are not registered
(masking every "ab" in every message would make errors unreadable).

This module also holds how ork creates its own files: owner-only (0700 folders, 0600 files).
"""

from __future__ import annotations

import json
import os
import re
import threading
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from ork_core.storage.base import JSONText, LogLine, RunUpdate, TaskUpdate

if TYPE_CHECKING:
    from pydantic import BaseModel

MASK = "***"
MIN_LENGTH = 4

_lock = threading.Lock()
_values: tuple[str, ...] = ()
"""Registered secrets and their encoded forms, longest first (so a secret containing another is masked whole)."""

_USERINFO = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:"]*:)([^\s/?#@"]+)@')  # never across a JSON string's end
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORDS = frozenset(
    {"key", "apikey", "pwd", "pass", "passphrase", "auth", "authorization", "authentication", "oauth", "session",
     "signature", "private", "bearer", "dsn"}
)
_SECRET_PREFIXES = ("token", "secret", "passw", "credential", "cookie", "apikey")


def looks_secret(name: str) -> bool:
    """True for a field, header, variable or parameter name that usually carries a credential.

    Words are split on ``_ - .`` and camelCase: ``API_TOKEN``, ``client_secret``,
    ``Authorization``, ``privateKey`` and ``x-api-key`` are; ``project`` and ``keyspace`` are not.
    """
    for raw in re.split(r"[^A-Za-z0-9]+", name):
        for word in _WORD.findall(raw):
            lowered = word.lower()
            if lowered in _SECRET_WORDS or lowered.startswith(_SECRET_PREFIXES):
                return True
    return False


def register(value: str | None) -> None:
    """Mask `value` from now on wherever ork stores or prints it (also JSON- and URL-encoded)."""
    global _values
    if not value or len(value) < MIN_LENGTH:
        return
    forms = {value, json.dumps(value)[1:-1], quote(value, safe="")}
    with _lock:
        if forms.issubset(_values):
            return
        _values = tuple(sorted(set(_values) | forms, key=len, reverse=True))


def registered() -> tuple[str, ...]:
    """The values masked now (for tests and `ork_core.display`)."""
    return _values


def mask(text: str) -> str:
    """`text` with every registered secret and every URL password replaced by ``***``.

    Costs two substring checks when nothing is registered and no URL is in it.
    """
    for value in _values:
        if value in text:
            text = text.replace(value, MASK)
    if "@" in text and "://" in text:
        text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@" if m.group(2) != MASK else m.group(0), text)
    return text


def mask_value(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with `mask` applied to every string in it."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(k) if isinstance(k, str) else k: mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(v) for v in value]
    return value


def strip_password(url: str) -> str:
    """The URL with its userinfo password (if any) shown as ``***``: for messages."""
    return mask(url) if "@" in url else url


def register_url(url: str) -> None:
    """Register the password in a URL's userinfo, as written and decoded."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        register(password)
        register(unquote(password))


# -- configuration ------------------------------------------------------------------------------

Interpolation = tuple[tuple[str | int, ...], str, str]
"""(path of the config value, variable name, the variable's value) of one ``${VAR}``."""


def register_config(found: Iterable[Interpolation], model: type[BaseModel] | None, base: int) -> None:
    """Register the ``${VAR}`` values interpolated into secret-looking or secret-typed config fields.

    :param found: the interpolations; paths start at ork.yaml's root
    :param model: the executor's config model, to tell ``SecretStr`` fields
    :param base: how many leading path elements lead to the config (``executors.<name>.config``)
    """
    for path, var, value in found:
        inner = path[base:]
        if looks_secret(var) or any(isinstance(p, str) and looks_secret(p) for p in inner) or _secret_typed(model, inner):
            register(value)


def _secret_typed(model: type[BaseModel] | None, path: Sequence[str | int]) -> bool:
    """Whether the config field at `path` is (or holds, or sits inside) a ``SecretStr``/``SecretBytes``."""
    from pydantic import BaseModel

    if model is None or not path or not isinstance(path[0], str):
        return False
    field = model.model_fields.get(path[0])
    if field is None:
        field = next((f for f in model.model_fields.values() if f.alias == path[0]), None)
    if field is None:
        return False
    return _holds_secret(field.annotation, path[1:], BaseModel)


def _holds_secret(annotation: Any, rest: Sequence[str | int], base_model: type[Any]) -> bool:
    from pydantic import SecretBytes, SecretStr

    if annotation in (SecretStr, SecretBytes):
        return True
    if isinstance(annotation, type) and issubclass(annotation, base_model):
        return _secret_typed(annotation, rest)
    return any(_holds_secret(arg, rest, base_model) for arg in typing.get_args(annotation) if arg is not type(None))


# -- the storage boundary -----------------------------------------------------------------------

_TASK_TEXT = ("error", "link", "external_id", "last_poll_error")


def mask_batch(updates: Sequence[TaskUpdate | RunUpdate], logs: Sequence[LogLine]) -> Sequence[LogLine]:
    """Mask a write batch in place (the updates' fields) and return its log lines masked.

    Called on every commit, so it is cheap when nothing is registered: a few substring
    checks per text field, and none for fields that are not text.
    """
    for u in updates:
        fields = u.fields
        if type(u) is TaskUpdate:
            for key in _TASK_TEXT:
                text = fields.get(key)
                if text is not None and type(text) is str:
                    fields[key] = mask(text)
            output = fields.get("output")
            if output is not None:
                if type(output) is JSONText:
                    masked = mask(output)
                    if masked is not output and masked != output:
                        fields["output"] = _masked_json(output, masked)
                else:
                    fields["output"] = mask_value(output)
            handle = fields.get("handle")
            if handle is not None:
                fields["handle"] = mask_value(handle)
        else:
            error = fields.get("error")
            if error is not None and type(error) is str:
                fields["error"] = mask(error)
    if not logs:
        return logs
    out: list[LogLine] | None = None
    for index, entry in enumerate(logs):
        masked_line = mask(entry.line)
        if masked_line is not entry.line and masked_line != entry.line:
            if out is None:
                out = list(logs)
            out[index] = LogLine(entry.run_id, entry.task, entry.attempt, entry.ts, entry.level, entry.stream, masked_line)
    return logs if out is None else out


def _masked_json(original: str, masked: str) -> str:
    """The masked JSON text if it is still JSON, else the original decoded, masked and encoded again."""
    try:
        json.loads(masked)
        return JSONText(masked)
    except ValueError:
        return JSONText(json.dumps(mask_value(json.loads(original))))


# -- ork's own files ----------------------------------------------------------------------------

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents owner-only (0700); folders that exist are left as they are."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
    except FileNotFoundError:
        if path.parent == path:
            raise
        private_dir(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass
    return path


def private_file(path: Path | str) -> None:
    """Create `path` owner-only (0600) if missing; take group and other access away if it has it.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX
    lock this process holds on it, which would silently unlock another SQLite connection's
    database.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
            return
        except FileExistsError:
            mode = os.stat(path).st_mode
    if mode & 0o077:
        os.chmod(path, FILE_MODE)


__all__ = [
    "MASK",
    "looks_secret",
    "mask",
    "mask_batch",
    "mask_value",
    "private_dir",
    "private_file",
    "register",
    "register_config",
    "register_url",
    "strip_password",
]
