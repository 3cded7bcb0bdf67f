#!/usr/bin/env bash
# Creates .venv with iic and its dependencies at the versions in constraints.txt (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import iic"
