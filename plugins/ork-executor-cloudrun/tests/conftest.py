"""Fixtures: a running FakeCloudRun per test, and real run_v2 clients pointed at it.

Each test gets its own server so state and counters never leak between tests; the
fixture stops it even when the test fails, and fails the test if the fake saw a
request it does not route or hit a bug of its own (either means the wire contract
drifted and the test result cannot be trusted).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_PLUGIN_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("ork_executor_cloudrun") is None:  # plugin not installed yet
    sys.path.insert(0, str(_PLUGIN_ROOT))
# The repo runs pytest with --import-mode=importlib, which puts no test folder on sys.path;
# the test modules import the fake by name. Appended, not prepended, so this folder's
# conftest never shadows the one other test folders import by name.
if str(_PLUGIN_ROOT / "tests") not in sys.path:
    sys.path.append(str(_PLUGIN_ROOT / "tests"))

from fake_cloudrun import FakeCloudRun

from ork_executor_cloudrun.api import CloudRunClients, make_clients

PROJECT = "ork-test"
REGION = "europe-west1"


@pytest.fixture
def fake_cloudrun() -> Iterator[FakeCloudRun]:
    fake = FakeCloudRun(project=PROJECT, region=REGION)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.unhandled, f"requests the fake does not implement: {fake.unhandled}"
    assert not fake.server_errors, f"the fake failed internally: {fake.server_errors}"


@pytest.fixture
def clients(fake_cloudrun: FakeCloudRun) -> Iterator[CloudRunClients]:
    c = make_clients(PROJECT, REGION, fake_cloudrun.endpoint, "anonymous", request_timeout_s=5.0)
    try:
        yield c
    finally:
        c.close()
