#!/usr/bin/env bash
# Sets up .venv if needed, then trains IIC on the embedded digits and prints ACC/NMI/ARI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/iic train "$@"
