"""One real Ray head node on 127.0.0.1 for the whole session, and a project folder per test.

The cluster is started once (a few seconds) and stopped by its own process ids at the end;
the session fails if any of its processes outlives that. This process also connects to it
as a Ray driver once, so in-process runs share that connection instead of paying
``ray.init`` per test; the runs of the real ``ork`` command connect on their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from ray_cluster import QUIET_ENV, RayCluster, alive  # noqa: E402
from ray_harness import RayProject, stop  # noqa: E402

os.environ.update(QUIET_ENV)


@pytest.fixture(scope="session")
def cluster() -> Iterator[RayCluster]:
    head = RayCluster(num_cpus=4)
    try:
        head.start()
        os.environ.update(head.auth_env())  # before Ray is imported: for this process and its children
        import ray

        ray.init(address=head.address, log_to_driver=False, configure_logging=False)
        yield head
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        left = head.stop()
    assert not left, f"Ray processes of the test cluster still alive after stop: {left}"
    assert not [p for p in head.pids_seen if alive(p)]


@pytest.fixture
def proj(tmp_path: Path, cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> RayProject:
    monkeypatch.delenv("ORK_DB", raising=False)
    folder = tmp_path / "proj"
    folder.mkdir()
    project = RayProject(folder, cluster)
    project.configure()
    return project


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; whatever still runs at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            stop(proc)
