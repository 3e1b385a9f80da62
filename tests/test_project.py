"""ork.yaml: type resolution, config validation and the errors a person reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from orkhelpers import Cli, write

EXECUTOR = """
from pydantic import BaseModel
from ork import executor, Context

class BigQueryConfig(BaseModel):
    project: str
    location: str = "US"
    cost_per_tb: float = 5.0

@executor
class BigQueryExecutor:
    def __init__(self, config: BigQueryConfig):
        self.config = config
    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> dict:
        return {"project": self.config.project}
"""


@pytest.fixture
def proj(project: Path, fresh_modules: None) -> Path:
    write(project / "executors" / "__init__.py", "")
    write(project / "executors" / "bigquery.py", EXECUTOR)
    return project


def test_config_only_registration_from_the_project_directory(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", """
        executors:
          python:
            type: python
          bigquery:
            type: executors.bigquery:BigQueryExecutor
            config:
              project: my-gcp-project
              location: US
              cost_per_tb: 5.0
        """)
    result = cli("validate", cwd=proj)
    assert result.code == 0, result.err
    assert "2 executor(s) valid" in result.out
    listed = cli("executors", "--json", cwd=proj)
    assert '"source": "ork.yaml"' in listed.out


def test_missing_config_field_names_file_line_and_full_path(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", """
        executors:
          bigquery:
            type: executors.bigquery:BigQueryExecutor
            config:
              location: US
        """)
    result = cli("validate", cwd=proj)
    assert result.code == 1
    assert f"{proj / 'ork.yaml'}:4: executors.bigquery.config.project: required field is missing" in result.err


def test_unknown_config_field_suggests_the_close_one(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", """
        executors:
          bigquery:
            type: executors.bigquery:BigQueryExecutor
            config:
              project: p
              locaton: EU
        """)
    result = cli("validate", cwd=proj)
    assert result.code == 1
    assert "ork.yaml:6: executors.bigquery.config.locaton: unknown key 'locaton' (did you mean 'location'?)" in result.err


def test_env_variable_is_substituted_and_never_printed(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", """
        executors:
          bigquery:
            type: executors.bigquery:BigQueryExecutor
            config:
              project: ${GCP_PROJECT}
              cost_per_tb: ${COST}
        """)
    result = cli("validate", cwd=proj, env={"GCP_PROJECT": "p", "COST": "s3cr3t-value"})
    assert result.code == 1
    assert "executors.bigquery.config.cost_per_tb" in result.err
    assert "s3cr3t-value" not in result.err
    cli.monkeypatch.delenv("GCP_PROJECT")
    result = cli("validate", cwd=proj, env={"COST": "5"})
    assert "environment variable GCP_PROJECT is not set" in result.err


def test_typo_in_type_reads_differently_from_a_missing_dependency(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", "executors:\n  bq:\n    type: executors.bigqeury:BigQueryExecutor\n")
    typo = cli("validate", cwd=proj)
    assert "module 'executors.bigqeury' not found" in typo.err
    write(proj / "executors" / "needsdep.py", "import google_cloud_nonexistent_lib\n")
    write(proj / "ork.yaml", "executors:\n  bq:\n    type: executors.needsdep:X\n")
    dep = cli("validate", cwd=proj)
    assert "was found but needs 'google_cloud_nonexistent_lib', which is not installed" in dep.err
    write(proj / "ork.yaml", "executors:\n  bq:\n    type: executors.bigquery:BigQueryExecuter\n")
    cls = cli("validate", cwd=proj)
    assert "did you mean BigQueryExecutor?" in cls.err


def test_unknown_registered_type_lists_close_names(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", "executors:\n  py:\n    type: pyhton\n")
    result = cli("validate", cwd=proj)
    assert result.code == 1
    assert "ork.yaml:3: executors.py.type: unknown executor type 'pyhton'; did you mean 'python'?" in result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "ok"),
        ("executors: [1, 2]\n", "executors: expected a mapping, got a list"),
        ("executors:\n  a:\n    config: {}\n", "executors.a.type: required field is missing"),
        ("executor:\n  a:\n    type: python\n", "unknown key 'executor' (did you mean 'executors'?)"),
        ("executors:\n  a: {type: python, max_concurrency: 0}\n", "executors.a.max_concurrency"),
        ("executors: {a: {type: python}\n", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_ork_yaml_inputs(cli: Cli, project: Path, text: str, expected: str) -> None:
    (project / "ork.yaml").write_text(text)
    result = cli("validate", cwd=project)
    if expected == "ok":
        assert result.code == 0, result.err
    else:
        assert result.code != 0
        assert expected in result.err, result.err
        assert "Traceback" not in result.err


def test_executor_show_prints_config_fields_and_docstring(cli: Cli, proj: Path) -> None:
    write(proj / "ork.yaml", "executors:\n  bq:\n    type: executors.bigquery:BigQueryExecutor\n    config: {project: p}\n")
    result = cli("executors", "show", "bq", cwd=proj)
    assert result.code == 0, result.err
    assert "project: string (required)" in result.out
    assert "cost_per_tb: number (default 5.0)" in result.out
