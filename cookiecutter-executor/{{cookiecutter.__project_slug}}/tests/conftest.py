"""Fixtures shared by the tests{% if cookiecutter.kind == "deferred" %}: a fake job API on 127.0.0.1{% endif %}."""

from __future__ import annotations

import os
import sysconfig
{%- if cookiecutter.kind == "deferred" %}
from collections.abc import Iterator
{%- endif %}
from pathlib import Path

import pytest
{%- if cookiecutter.kind == "deferred" %}

from job_server import JobServer


@pytest.fixture
def job_server() -> Iterator[JobServer]:
    """A fresh fake job API per test, stopped when the test ends."""
    with JobServer() as server:
        yield server
{%- endif %}


@pytest.fixture
def ork() -> Path:
    """The ``ork`` command installed beside this interpreter."""
    return Path(sysconfig.get_path("scripts")) / "ork"


@pytest.fixture
def ork_env() -> dict[str, str]:
    """The environment for ``ork`` child processes, without the caller's ORK_* switches."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ORK_")}
