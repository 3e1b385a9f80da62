#!/usr/bin/env bash
# Install ork-core and every plugin (with their test extras) into .venv, then run the tests.
# Extra arguments go to pytest:  bash scripts/test.sh -k resume -x
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
exec .venv/bin/python -m pytest "$@"
