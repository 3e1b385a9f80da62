"""What users write (executor config, task keys) and what a task outputs, as pydantic models.

Kept apart from the executor and free of ``google.cloud`` imports, so that ``ork validate``
and ``ork bigquery estimate`` can check a workflow's BigQuery tasks cheaply. The first three
fields of each model are the seed's (``docs``: the executor example); the rest are optional.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

__all__ = ["BigQueryConfig", "BigQueryOutput", "BigQueryTask", "WriteDisposition"]

WriteDisposition = Literal["WRITE_TRUNCATE", "WRITE_APPEND", "WRITE_EMPTY"]

_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_DATASET_ID = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


def _is_reference(value: str, parts: int) -> bool:
    """Whether `value` is ``[project.]name1[.name2]`` with `parts` names after the project.

    A domain-scoped project (``example.com:proj``) has a dot of its own, so the project is
    whatever precedes the last `parts` names.
    """
    if not value or any(c.isspace() or c == "`" for c in value):
        return False
    names = value.split(".")
    return len(names) >= parts and all(names) and _DATASET_ID.fullmatch(names[-parts]) is not None


class BigQueryConfig(BaseModel):
    """Settings under ``executors.<name>.config`` in ork.yaml for ``type: bigquery``."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1)
    """Project the jobs run (and are billed) in; also the default project of table names."""
    location: str = "US"
    """Where jobs run, e.g. ``US``, ``EU``, ``europe-west1``."""
    cost_per_tb: float = Field(default=5.0, ge=0)
    """US dollars per TiB processed, for ``estimated_cost_usd``."""
    api_endpoint: str | None = None
    """Another API endpoint, e.g. ``http://127.0.0.1:9050`` for a local emulator. Unset, the
    client's default applies (which honours ``BIGQUERY_EMULATOR_HOST``)."""
    credentials: str = "default"
    """``default`` (Application Default Credentials), ``anonymous`` (emulators only) or the
    path of a service-account JSON key file."""
    labels: dict[str, str] = {}
    """Labels put on every job, besides ork's own ``ork-workflow``, ``ork-task`` and ``ork-run``."""
    maximum_bytes_billed: PositiveInt | None = None
    """Jobs that would bill more bytes fail instead of running."""
    default_dataset: str | None = None
    """``dataset`` or ``project.dataset`` that unqualified table names refer to."""
    poll_interval: PositiveFloat = 2.0
    """Seconds between two looks at a running job."""

    @field_validator("credentials")
    @classmethod
    def _credentials_exist(cls, value: str) -> str:
        if value in ("default", "anonymous"):
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(
                "must be 'default', 'anonymous' or the path of a service-account JSON key file; "
                f"{str(path)!r} is not a file"
            )
        return str(path.resolve())

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not _LABEL_KEY.fullmatch(key):
                raise ValueError(
                    f"label key {key!r} must start with a lowercase letter and hold at most 63 lowercase "
                    "letters, digits, '_' and '-'"
                )
            if key.startswith("ork-"):
                raise ValueError(f"label key {key!r}: keys starting with 'ork-' are set by ork")
            if not _LABEL_VALUE.fullmatch(str(label)):
                raise ValueError(
                    f"label {key!r}: value {label!r} must hold at most 63 lowercase letters, digits, '_' and '-'"
                )
        return value

    @field_validator("default_dataset")
    @classmethod
    def _valid_dataset(cls, value: str | None) -> str | None:
        if value is not None and not _is_reference(value, 1):
            raise ValueError(f"{value!r} is not 'dataset' or 'project.dataset'")
        return value


class BigQueryTask(BaseModel):
    """The keys a ``bigquery`` task sets in its ``config_file`` (as in the seed) or inline.

    Every key is optional here because ``ork validate`` checks the inline keys alone; the
    merged settings must name a ``file`` when the task runs.
    """

    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    """The SQL template (Jinja), relative to the workflow's folder, the project's folder or
    the config file's folder (the first that has it), or absolute."""
    params: dict[str, Any] = {}
    """Template variables. Values may be ``{param: name}`` or ``{ref: tasks.<t>.output.<f>}``."""
    query_parameters: dict[str, Any] = {}
    """Real BigQuery query parameters (``@name`` in the SQL), the safe way to pass values:
    a YAML scalar or list (type inferred), or ``{type: DATE, value: "2024-01-31"}``."""
    destination: str | None = None
    """``dataset.table`` or ``project.dataset.table`` to write a SELECT's result to."""
    write_disposition: WriteDisposition | None = None
    """What happens to an existing ``destination`` table (BigQuery's default: WRITE_EMPTY)."""
    dry_run: bool = False
    """Only ask BigQuery what the query would process; nothing runs."""

    @field_validator("destination")
    @classmethod
    def _valid_destination(cls, value: str | None) -> str | None:
        if value is not None and not _is_reference(value, 2):
            raise ValueError(f"{value!r} is not 'dataset.table' or 'project.dataset.table'")
        return value

    @model_validator(mode="after")
    def _disposition_needs_destination(self) -> BigQueryTask:
        if self.write_disposition is not None and self.destination is None:
            raise ValueError("write_disposition needs a destination table (destination: dataset.table)")
        return self


class BigQueryOutput(BaseModel):
    """A finished query, as the task's output (the seed's three fields come first)."""

    rows_affected: int
    """Rows a DML statement changed, or rows a SELECT returned; 0 for DDL."""
    bytes_processed: int
    estimated_cost_usd: float
    """``bytes_processed`` in TiB times the executor's ``cost_per_tb``, rounded to 4 places."""
    job_id: str
    console_link: str
    """The job in the Google Cloud console ("" for a dry run, which leaves no job)."""
    dry_run: bool = False
