#!/usr/bin/env bash
# The novaproxy demo: installs what it needs, then plays the story on real components.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/bootstrap.sh
exec .venv/bin/python -m deploy.demo "$@"
