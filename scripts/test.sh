#!/usr/bin/env bash
# Installs aqsep with its test dependencies into a new virtual environment made for this run,
# then runs the linters, the type checker and the test suite with it. Nothing installed by hand
# on the machine is seen: what the tests need, scripts/install.sh must install.
#
#   bash scripts/test.sh                        # a fresh environment in a temporary folder
#   bash scripts/test.sh tests/test_audio.py -x # arguments go to pytest
#   PYTHON=python3 bash scripts/test.sh         # install into, and test with, an existing
#                                               # interpreter instead (faster, not isolated)
#   KEEP_VENV=1 bash scripts/test.sh            # keep the environment and print where it is
#
# The environment is made with BASE_PYTHON (default python3) and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  VENV=$(mktemp -d "${TMPDIR:-/tmp}/aqsep-test-venv.XXXXXX")
  if [ -z "${KEEP_VENV:-}" ]; then
    trap 'rm -rf "$VENV"' EXIT
  else
    echo "test environment: $VENV (kept)"
  fi
  "${BASE_PYTHON:-python3}" -m venv "$VENV"
  PYTHON="$VENV/bin/python"
  export PYTHON
  echo "+ new virtual environment $VENV ($("$PYTHON" --version))"
fi
PY=$PYTHON

start=$(date +%s)
bash scripts/install.sh
echo "+ installed in $(($(date +%s) - start)) s"
$PY -m ruff check aqsep tests benchmarks scripts
$PY -m ruff format --check aqsep tests benchmarks scripts
$PY -m mypy aqsep
$PY -m pytest "$@"  # -q comes from pyproject.toml; a second one would hide the pass count
