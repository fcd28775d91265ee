#!/usr/bin/env bash
# The first command: a fresh Debian machine to a running service on port 8000.
# Embedded defaults: SQLite in ./var, files in ./var/storage, Redis on localhost.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh serve  # what serving needs; the tests' tools come with test.sh
mkdir -p var
.venv/bin/jobs-api migrate
if [ ! -s var/first-key ]; then
    .venv/bin/jobs-api keys create default > var/first-key
fi
echo
echo "API key (also in var/first-key): $(cat var/first-key)"
base="http://127.0.0.1:${PORT:-8000}"
echo "Page: $base/   API: $base/v2   Docs: $base/docs   (Ctrl-C stops the API and the worker)"
echo
.venv/bin/jobs-api worker &
worker=$!
trap 'kill $worker 2>/dev/null || true' EXIT INT TERM
.venv/bin/jobs-api serve
