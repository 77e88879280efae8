#!/usr/bin/env bash
# Installs aqsep with its test dependencies, then runs the linters and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
$PY -m ruff check aqsep tests benchmarks
$PY -m ruff format --check aqsep tests benchmarks
$PY -m mypy aqsep
$PY -m pytest -q "$@"
