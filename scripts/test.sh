#!/usr/bin/env bash
# The second command: the whole test suite against real Redis, ffmpeg and a database
# (PostgreSQL when TEST_DATABASE_URL is set, SQLite otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest "$@"
