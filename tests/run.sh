#!/usr/bin/env bash
# The test suite: installs what it needs, checks style, runs every tier.
# Extra arguments go to pytest (e.g. tests/unit, -k negotiation, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/bootstrap.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
