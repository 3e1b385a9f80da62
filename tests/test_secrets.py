"""Secrets from configuration never reach storage or the terminal in clear; ork's files are owner-only."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orkhelpers import Cli, write
from pydantic import BaseModel

from ork import Context, TaskError, executor, hookimpl, register_secret

TOKEN = "tok-3f9a1c-never-shown"
PROJECT_ID = "acme-analytics-prod"

EXECUTOR = '''
from pydantic import BaseModel, SecretStr, field_validator
from ork import TaskError, executor


class Config(BaseModel):
    api_token: str = ""
    bearer: SecretStr = SecretStr("")
    project: str = ""

    @field_validator("api_token", "project")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError(f"{value!r} must not contain spaces")
        return value

    @field_validator("bearer", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        if isinstance(value, str) and value.startswith("bad"):
            raise ValueError(f"{value!r} is not a bearer token")
        return value


@executor
class Leaky:
    """Does what careless services do: puts its credentials in errors, logs and outputs."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def run(self, config_file: str, ctx, upstream={}):
        token = self.config.api_token
        ctx.log.info("calling with token %s", token)
        ctx.log.line("stdout", f"curl -H 'Authorization: Bearer {token}' https://ork:{self.config.bearer.get_secret_value()}@db.internal/x")
        folder = ctx.ensure_artifact_dir()
        (folder / "note.txt").write_text("artifact")
        if ctx.task_name == "fails":
            raise TaskError(f"HTTP 500: {{'headers': {{'authorization': 'Bearer {token}'}}}} project {self.config.project}")
        return {"echo": token, "url": f"postgresql://app:{self.config.bearer.get_secret_value()}@db.internal/x", "project": self.config.project}
'''

ORK_YAML = """
executors:
  leaky:
    type: leaky:Leaky
    config:
      api_token: ${API_TOKEN}
      bearer: ${BEARER}
      project: ${GCP_PROJECT}
"""


def test_looks_secret() -> None:
    from ork_core import secrets

    for name in ("API_TOKEN", "client_secret", "Authorization", "privateKey", "x-api-key", "password", "DB_PASSWD", "Cookie"):
        assert secrets.looks_secret(name), name
    for name in ("project", "GCP_PROJECT", "keyspace", "author", "location", "base_url", "monkey"):
        assert not secrets.looks_secret(name), name


def test_mask_registered_values_their_encodings_and_url_passwords() -> None:
    from ork_core import secrets

    secrets.register('s3c"ret\\value-1')
    secrets.register("ab")  # too short to mask anywhere
    assert secrets.mask('x s3c"ret\\value-1 y') == "x *** y"
    assert secrets.mask('{"v": "s3c\\"ret\\\\value-1"}') == '{"v": "***"}'  # as it appears in JSON
    assert secrets.mask("s3c%22ret%5Cvalue-1") == "***"  # as it appears in a URL
    assert secrets.mask("ab cd") == "ab cd"
    assert secrets.mask("see postgresql://u:pw@127.0.0.1/x and https://user@h/") == "see postgresql://u:***@127.0.0.1/x and https://user@h/"
    assert secrets.mask('["http://a:1","b@c"]') == '["http://a:1","b@c"]'  # not across the end of a JSON string


def _ork(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ORK_DISABLE_PLUGINS": "1", "COLUMNS": "1000", **env}
    full.pop("ORK_DB", None)
    return subprocess.run([sys.executable, "-m", "ork_core", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def test_validate_never_prints_a_bad_secret_value(project: Path) -> None:
    write(project / "leaky.py", EXECUTOR)
    write(project / "ork.yaml", ORK_YAML)
    bad_token, bad_bearer = "tok with spaces 77", "bad-bearer-value-88"
    env = {"API_TOKEN": bad_token, "BEARER": bad_bearer, "GCP_PROJECT": "acme project"}
    result = _ork(["validate"], project, env)
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert "executors.leaky.config.api_token" in err and "'***' must not contain spaces" in err, err
    assert "executors.leaky.config.bearer" in err and "'***' is not a bearer token" in err, err
    assert "'acme project' must not contain spaces" in err, err  # not a secret: shown, so the error is useful
    assert bad_token not in err + result.stdout and bad_bearer not in err + result.stdout


def test_an_unknown_storage_scheme_does_not_print_the_password(project: Path, cli: Cli) -> None:
    result = cli("--db", "postgresql://u:pw-77f1@127.0.0.1/x", "runs", cwd=project)
    assert result.code == 2
    assert "state database 'postgresql://u:***@127.0.0.1/x'" in result.err, result.err
    assert "pw-77f1" not in result.err + result.out


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_masked_in_storage_and_output_and_files_are_owner_only(project: Path) -> None:
    write(project / "leaky.py", EXECUTOR)
    write(project / "ork.yaml", ORK_YAML)
    write(project / "wf.yaml", "name: leaks\ntasks:\n  works: {executor: leaky}\n  fails: {executor: leaky}\n")
    bearer = "brr-51c0-never-shown"
    env = {"API_TOKEN": TOKEN, "BEARER": bearer, "GCP_PROJECT": PROJECT_ID}
    assert _ork(["runs"], project, env).returncode == 0  # creates the database; held open so its WAL stays
    keep = sqlite3.connect(project / ".ork" / "ork.db")
    keep.execute("SELECT count(*) FROM runs").fetchall()

    run = _ork(["run", "wf.yaml"], project, env)
    assert run.returncode == 1, run.stdout + run.stderr
    run_id = run.stdout.split()[1]
    shown = [_ork(args, project, env) for args in (["runs", "show", run_id], ["runs", "show", run_id, "--json"], ["logs", run_id])]
    texts = [run.stdout + run.stderr, *(r.stdout + r.stderr for r in shown)]
    for text in texts:
        assert TOKEN not in text and bearer not in text, text
    assert "'authorization': 'Bearer ***'" in run.stdout, run.stdout
    assert f"project {PROJECT_ID}" in shown[0].stdout  # a non-secret interpolation stays
    assert "calling with token ***" in shown[2].stdout
    assert "https://ork:***@db.internal/x" in shown[2].stdout
    assert '"echo": "***"' in shown[1].stdout and "postgresql://app:***@db.internal/x" in shown[1].stdout

    state = project / ".ork"
    names = {p.name for p in state.iterdir()}
    assert {"ork.db", "ork.db-wal", "ork.db-shm"} <= names, names
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and bearer.encode() not in data, path

    assert _mode(state) == 0o700
    for name in ("ork.db", "ork.db-wal", "ork.db-shm"):
        assert _mode(state / name) == 0o600, name
    attempt = state / "artifacts" / run_id / "works" / "1"
    for folder in (state / "artifacts", state / "artifacts" / run_id, attempt.parent, attempt):
        assert _mode(folder) == 0o700, folder
    keep.close()


def test_an_existing_database_readable_by_others_is_made_owner_only(project: Path, cli: Cli) -> None:
    assert cli("runs", cwd=project).code == 0
    db = project / ".ork" / "ork.db"
    db.chmod(0o644)
    assert cli("runs", cwd=project).code == 0
    assert _mode(db) == 0o600


@pytest.mark.parametrize("name", ["output", "handle"])
def test_a_masked_json_value_stays_valid_json(name: str) -> None:
    from ork_core import secrets
    from ork_core.storage.base import JSONText, TaskUpdate

    secrets.register("1, 2, 3")  # a "secret" that spans JSON syntax
    value = JSONText('[1, 2, 3, "1, 2, 3"]') if name == "output" else {"ids": "1, 2, 3", "n": [1, 2, 3]}
    update = TaskUpdate("r", "t", {name: value})
    secrets.mask_batch([update], [])
    if name == "output":
        import json

        assert json.loads(update.fields["output"]) == [1, 2, 3, "***"]
    else:
        assert update.fields["handle"] == {"ids": "***", "n": [1, 2, 3]}



HOOK_SECRET = "hook-7c1e-never-shown"


class _NoConfig(BaseModel):
    pass


@executor
class _Echoes:
    """Registers a secret as a plugin does for its credentials, then fails with it in the error."""

    def __init__(self, config: _NoConfig) -> None:
        register_secret(HOOK_SECRET)

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> None:
        raise TaskError(f"401 for token {HOOK_SECRET}")


def test_status_hooks_receive_masked_errors() -> None:
    """Hooks notify other systems (chat, tracing): a secret in an error must not reach them either."""
    from ork.testing import run_task

    seen: list[str | None] = []

    class Watcher:
        @hookimpl
        def ork_task_status_changed(self, status: str, error: str | None) -> None:
            if status == "failed":
                seen.append(error)

    result = run_task(_Echoes, plugins=[Watcher()])
    assert result.status == "failed"
    assert seen == ["401 for token ***"]
