"""Start a local ``bqemulator``, offline and without leaks: for tests and local runs.

Needs the ``emulator`` extra (``pip install 'ork-executor-bigquery[emulator]'``); nothing
else in the package imports this module.

The emulator is a separate process (not the in-process pytest plugin that
``bqemulator[testing]`` ships) for two reasons: clients then talk to it
exactly as they would to BigQuery, over HTTP through the real client, and a
process group can be killed for certain even if the emulator wedges.

Two things would make the emulator reach the internet on start-up, which
this workplace (and most CI) forbids:

* it runs ``INSTALL spatial`` and fails hard if DuckDB has to download it.
  :func:`ensure_spatial_extension` installs the extension beforehand from the
  file that the ``duckdb-extension-spatial`` wheel ships, so DuckDB's
  ``INSTALL spatial`` finds it already in place and does nothing;
* it runs ``INSTALL avro`` (best effort, it only logs a warning on failure but
  still attempts the download). ``BQEMU_ENABLE_FORMAT_EXTENSIONS=false`` in the
  child's environment turns that off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

SPATIAL_PACKAGE = "duckdb_extension_spatial"
"""Import name of the ``duckdb-extension-spatial`` wheel."""

DEFAULT_PROJECT = "test"
STARTUP_TIMEOUT_S = 60.0
"""Bound on waiting for readiness; a healthy start takes 1-3 s, a loaded CI
machine more, a broken one forever."""
STOP_TIMEOUT_S = 10.0
"""Grace period for SIGTERM before the group gets SIGKILL; the emulator's own
shutdown waits up to 2 s for gRPC."""

# Environment given to the emulator on top of ours. Anything BQEMU_* that we
# inherit is dropped first so a developer's shell cannot change the set-up.
EMULATOR_ENV: dict[str, str] = {
    # Stops the start-up ``INSTALL avro`` download attempt (avro is only
    # needed for Avro load/extract jobs, which these tests never run).
    "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
    "BQEMU_TRACING_ENABLED": "false",
    "BQEMU_ADMIN_ENABLED": "false",
}


class EmulatorError(RuntimeError):
    """The emulator could not be prepared or did not come up."""


def spatial_extension_file() -> Path:
    """Return the spatial extension binary shipped inside the wheel.

    The wheel (``duckdb-extension-spatial==X``) carries one file,
    ``duckdb_extension_spatial/extensions/vX/spatial.duckdb_extension``, built
    for DuckDB ``X``; DuckDB refuses to load an extension built for another
    version, so the wheel's version has to equal duckdb's, which the wheel
    pins itself (``Requires-Dist: duckdb==X``).
    """
    try:
        root = resources.files(SPATIAL_PACKAGE)
    except ModuleNotFoundError as exc:
        raise EmulatorError(
            f"package duckdb-extension-spatial=={duckdb.__version__} is not installed; "
            "bqemulator cannot start offline without it"
        ) from exc
    path = (
        Path(str(root))
        / "extensions"
        / f"v{duckdb.__version__}"
        / "spatial.duckdb_extension"
    )
    if not path.is_file():
        found = sorted(p.name for p in (Path(str(root)) / "extensions").glob("v*"))
        raise EmulatorError(
            f"no spatial extension for DuckDB v{duckdb.__version__} in {root} "
            f"(the wheel has {found}); install duckdb-extension-spatial=={duckdb.__version__}"
        )
    return path


def _spatial_state(con: duckdb.DuckDBPyConnection) -> tuple[bool, str]:
    row = con.execute(
        "SELECT installed, install_path FROM duckdb_extensions() WHERE extension_name = 'spatial'"
    ).fetchone()
    if row is None:
        return False, ""
    return bool(row[0]), str(row[1] or "")


def ensure_spatial_extension() -> Path:
    """Install DuckDB's spatial extension from the wheel's file, once.

    DuckDB keeps installed extensions per user, in
    ``$HOME/.duckdb/extensions/v<version>/<platform>/``; ``INSTALL '<file>'``
    copies the file there and writes a ``.info`` next to it. The emulator
    process (same ``HOME``) then finds it, so its own ``INSTALL spatial`` is
    a no-op and never goes to the network. The work is skipped when the
    extension is already installed, and serialised with a file lock so that
    parallel test workers do not copy the 80 MB file over each other.
    Returns the installed file's path.
    """
    # A connection that may not fetch anything by itself: only the explicit
    # INSTALL from a local file below writes to the extension directory.
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    con = duckdb.connect(":memory:", config=config)
    try:
        installed, install_path = _spatial_state(con)
        if installed and Path(install_path).is_file():
            return Path(install_path)
        source = spatial_extension_file()
        lock_dir = Path.home() / ".duckdb"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / ".ork-spatial-install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                installed, install_path = _spatial_state(con)
                if not (installed and Path(install_path).is_file()):
                    quoted = str(source).replace("'", "''")
                    con.execute(f"INSTALL '{quoted}'")
                    installed, install_path = _spatial_state(con)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        # Loading proves the file suits this DuckDB and platform; a bad file
        # fails here with DuckDB's reason rather than inside the emulator.
        con.execute("LOAD spatial")
    except duckdb.Error as exc:
        raise EmulatorError(
            f"could not install DuckDB spatial extension: {exc}"
        ) from exc
    finally:
        con.close()
    if not installed:
        raise EmulatorError("DuckDB reports spatial as not installed after INSTALL")
    return Path(install_path)


@dataclass(frozen=True)
class Emulator:
    """A running emulator, as the tests need to reach it."""

    api_endpoint: str
    """``http://127.0.0.1:PORT``, for ``ClientOptions(api_endpoint=...)``;
    the scheme matters: the client treats a bare ``host:port`` as https."""
    project: str
    pid: int
    log_path: Path


def _listening_port(log_path: Path) -> int | None:
    """Find the REST port in the emulator's JSON log.

    The emulator is started with port 0 so the kernel picks a free port with
    no race against other processes; the emulator logs the port it bound as
    the ``rest.listen`` event.
    """
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if '"rest.listen"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "rest.listen":
                return int(record["port"])
    return None


def _is_ready(api_endpoint: str, project: str) -> bool:
    url = f"{api_endpoint}/bigquery/v2/projects/{project}/datasets"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except FileNotFoundError:
        return "<no log>"


def stop_process_group(
    proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S
) -> None:
    """Stop a child started with ``start_new_session=True`` and all its children.

    SIGTERM lets the emulator close DuckDB cleanly; SIGKILL follows if it
    does not exit in time. The group is signalled (not just the pid) so that
    anything the emulator spawned goes too, even if the leader already died.
    """
    pgid = proc.pid  # leader of its own session, so pgid == pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # Whatever is left in the group (the leader or stray children) is killed.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def bq_emulator(
    project: str = DEFAULT_PROJECT,
    *,
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> Iterator[Emulator]:
    """Run ``bqemulator`` on free loopback ports for the duration of the block.

    Yields once ``GET /bigquery/v2/projects/<project>/datasets`` answers 200.
    The process is always stopped on exit, including when start-up fails or
    the block raises.
    """
    ensure_spatial_extension()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BQEMU_")}
    env.update(EMULATOR_ENV)
    # The client-side emulator variable is meaningless to the server and
    # would only confuse a child that imports google libraries.
    env.pop("BIGQUERY_EMULATOR_HOST", None)
    with tempfile.TemporaryDirectory(prefix="ork-bqemu-") as workdir:
        log_path = Path(workdir) / "emulator.log"
        command = [
            sys.executable,
            "-m",
            "bqemulator",
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            "0",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--ephemeral",
            "--project",
            project,
            "--log-format",
            "json",
            "--log-level",
            "info",
        ]
        with open(log_path, "wb") as log:
            # cwd is the empty temporary directory so that a stray
            # ``.bqemu.toml`` in the caller's cwd is not read.
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            endpoint = _wait_until_ready(proc, log_path, project, startup_timeout)
            yield Emulator(
                api_endpoint=endpoint, project=project, pid=proc.pid, log_path=log_path
            )
        finally:
            stop_process_group(proc)


def _wait_until_ready(
    proc: subprocess.Popen[bytes], log_path: Path, project: str, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    port: int | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorError(
                f"bqemulator exited with {proc.returncode} during start-up:\n{_tail(log_path)}"
            )
        if port is None:
            port = _listening_port(log_path)
        if port is not None:
            endpoint = f"http://127.0.0.1:{port}"
            if _is_ready(endpoint, project):
                return endpoint
        time.sleep(0.05)
    raise EmulatorError(
        f"bqemulator not ready within {timeout:.0f}s:\n{_tail(log_path)}"
    )


ADC_FILE_NAME = "emulator-adc.json"
"""The credentials file `client_environment` writes."""


def client_environment(api_endpoint: str, folder: Path) -> dict[str, str]:
    """Environment variables that point unmodified ``google-cloud-bigquery`` code at the emulator.

    Code written for BigQuery (``bigquery.Client(project=...)`` with no endpoint and
    default credentials) then runs against the emulator as it is:

    * ``BIGQUERY_EMULATOR_HOST`` is the library's own switch for its API endpoint; it
      needs the scheme, or the client would speak https to a plain-http port;
    * ``GOOGLE_APPLICATION_CREDENTIALS`` names an ``authorized_user`` file written into
      `folder` that already holds an access token which never expires, so google-auth
      never asks Google's token endpoint for one (the emulator accepts any token).
    """
    folder.mkdir(parents=True, exist_ok=True)
    adc = folder / ADC_FILE_NAME
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "ork-bigquery-emulator",
                "client_secret": "ork-bigquery-emulator",
                "refresh_token": "ork-bigquery-emulator",
                "token": "ork-bigquery-emulator",
                "expiry": "2999-12-31T00:00:00Z",
            }
        ),
        encoding="utf-8",
    )
    return {
        "BIGQUERY_EMULATOR_HOST": api_endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": str(adc),
    }
