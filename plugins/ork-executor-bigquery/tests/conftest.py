"""Fixtures: a session-wide bqemulator, and a fresh FakeBigQuery per test.

The emulator takes 1-3 s to start, so one serves the whole session and each
test gets its own dataset in it. The fake is cheap and keeps per-test state
(counters, injected failures), so each test gets a new one.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
_PLUGIN_ROOT = _TESTS.parent
# Until the plugin is installed (pip install -e), import it from the source tree.
for _path in (_PLUGIN_ROOT, _TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from emulator import Emulator, bq_emulator
from fake_bigquery import FakeBigQuery
from google.cloud import bigquery
from ork_executor_bigquery.bq import make_client

PROJECT = "test"
LOCATION = "US"


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with bq_emulator(PROJECT) as emu:
        yield emu


@pytest.fixture
def emulator_client(emulator: Emulator) -> Iterator[bigquery.Client]:
    client = make_client(PROJECT, LOCATION, emulator.api_endpoint, "anonymous")
    yield client
    client.close()


@pytest.fixture
def emulator_dataset(emulator_client: bigquery.Client) -> Iterator[str]:
    """A dataset of this test's own in the shared emulator (``project.dataset``)."""
    dataset_id = f"{PROJECT}.ds_{uuid.uuid4().hex[:12]}"
    emulator_client.create_dataset(dataset_id)
    yield dataset_id
    emulator_client.delete_dataset(dataset_id, delete_contents=True, not_found_ok=True)


@pytest.fixture
def fake_bq() -> Iterator[FakeBigQuery]:
    with FakeBigQuery(project=PROJECT, default_location=LOCATION) as fake:
        yield fake


@pytest.fixture
def fake_client(fake_bq: FakeBigQuery) -> Iterator[bigquery.Client]:
    client = make_client(PROJECT, LOCATION, fake_bq.endpoint, "anonymous")
    yield client
    client.close()
