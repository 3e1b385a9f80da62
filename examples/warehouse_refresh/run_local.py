#!/usr/bin/env python3
"""Run warehouse_refresh against a local BigQuery emulator: one command, nothing in the cloud.

    python examples/warehouse_refresh/run_local.py            # with the project's executors/bigquery.py
    python examples/warehouse_refresh/run_local.py --plugin   # with the packaged plugin (type: bigquery)

It starts ``bqemulator`` on 127.0.0.1 for the project named in ork.yaml, creates the
datasets and source tables of ``local/source_data.sql``, runs ``ork run
warehouse_refresh.yaml`` and prints the table the workflow built; the emulator is stopped
at the end. The project's files are used exactly as they are: the environment tells
google-cloud-bigquery where BigQuery is (``BIGQUERY_EMULATOR_HOST``) and gives it local
credentials (``GOOGLE_APPLICATION_CREDENTIALS``), see
``ork_executor_bigquery.emulator.client_environment``.

Needs ``pip install -e 'plugins/ork-executor-bigquery[emulator]'``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ork_executor_bigquery import bq
from ork_executor_bigquery.emulator import bq_emulator, client_environment

HERE = Path(__file__).resolve().parent
SOURCE_DATA = HERE / "local" / "source_data.sql"
WORKFLOW = "warehouse_refresh.yaml"
OWN_TYPE = "type: executors.bigquery:BigQueryExecutor"
PLUGIN_TYPE = "type: bigquery"


def statements(path: Path) -> list[str]:
    """The file's statements, split on ';' (the file holds no ';' inside literals)."""
    parts = (part.strip() for part in path.read_text(encoding="utf-8").split(";"))
    return [p for p in parts if any(line.strip() and not line.strip().startswith("--") for line in p.splitlines())]


def load_source_data(api_endpoint: str, project: str, path: Path = SOURCE_DATA) -> None:
    client = bq.make_client(project, "US", api_endpoint, "anonymous")
    try:
        for sql in statements(path):
            client.query(sql).result()
    finally:
        client.close()


def plugin_copy(target: Path) -> Path:
    """A copy of this project whose ork.yaml uses the packaged plugin instead of executors/bigquery.py."""
    shutil.copytree(HERE, target, ignore=shutil.ignore_patterns(".ork", "__pycache__"))
    ork_yaml = target / "ork.yaml"
    text = ork_yaml.read_text(encoding="utf-8")
    if OWN_TYPE not in text:
        raise SystemExit(f"{ork_yaml}: expected '{OWN_TYPE}' to replace")
    ork_yaml.write_text(text.replace(OWN_TYPE, PLUGIN_TYPE), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugin", action="store_true", help="use the packaged plugin (type: bigquery)")
    args = parser.parse_args(argv)
    project = yaml.safe_load((HERE / "ork.yaml").read_text(encoding="utf-8"))["executors"]["bigquery"]["config"]["project"]
    with tempfile.TemporaryDirectory(prefix="warehouse-refresh-") as tmp, bq_emulator(project) as emulator:
        print(f"BigQuery emulator for project {project} at {emulator.api_endpoint}")
        load_source_data(emulator.api_endpoint, project)
        folder = plugin_copy(Path(tmp) / "project") if args.plugin else HERE
        env = {**os.environ, **client_environment(emulator.api_endpoint, Path(tmp))}
        env.pop("ORK_DB", None)
        code = subprocess.call([sys.executable, "-m", "ork_core", "run", WORKFLOW], cwd=folder, env=env)
        if code == 0:
            client = bq.make_client(project, "US", emulator.api_endpoint, "anonymous")
            try:
                rows = client.query("SELECT * FROM warehouse.user_facts ORDER BY user_id").result()
                print("\nwarehouse.user_facts:")
                for row in rows:
                    print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
            finally:
                client.close()
        return code


if __name__ == "__main__":
    sys.exit(main())
