#!/usr/bin/env bash
# Install ork-core and every plugin (with their test extras) into .venv, then run the tests.
# Extra arguments go to pytest:  bash scripts/test.sh -k resume -x
# The PostgreSQL tests use ORK_TEST_PG; when it is unset and PostgreSQL's server binaries are
# here, a throwaway cluster is started for this run and stopped after it (ORK_TEST_PG_START=0: don't).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
packages=(-e ".[test]")
for plugin in plugins/*/; do
  if [ -f "${plugin}pyproject.toml" ]; then
    packages+=(-e "${plugin%/}[test]")
  fi
done
.venv/bin/python -m pip install -q "${packages[@]}"
if [ -z "${ORK_TEST_PG:-}" ] && [ "${ORK_TEST_PG_START:-1}" != 0 ] \
    && { [ -n "${PG_BIN:-}" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then
  pg_env=$(bash scripts/pg-cluster.sh start)  # an assignment: a failed start stops here (set -e)
  eval "$pg_env"
  trap 'bash scripts/pg-cluster.sh stop "${ORK_TEST_PG_DIR:-}"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  .venv/bin/python -m pytest "$@"
else
  exec .venv/bin/python -m pytest "$@"
fi
