#!/usr/bin/env bash
# Sets up .venv if needed, then checks the code with ruff and runs the test suite (arguments go to pytest,
# e.g. -m "not slow" for the unit tests alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -q "$@"
