#!/usr/bin/env bash
# Installs what this project needs on Debian (as root) and creates ./.venv.
# `setup.sh serve` (run.sh): only what serving needs; plain `setup.sh` (test.sh) adds the test
# and benchmark tools. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=$([ "${1:-}" = serve ] && echo no || echo yes)

need_apt=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)  # text to speech (language_tts)
command -v pgrep >/dev/null || need_apt+=(procps)
command -v cc >/dev/null && [ -e /usr/include/stdio.h ] || need_apt+=(gcc libc6-dev)  # workers/ffmpeg/*.c
[ -e /usr/include/linux/landlock.h ] || need_apt+=(linux-libc-dev)  # workers/ffmpeg/sandbox.c
[ "$for_tests" = no ] || command -v wrk >/dev/null || need_apt+=(wrk)  # load generator of bench/api_load.py
[ "$for_tests" = no ] || command -v chromium >/dev/null || need_apt+=(chromium)  # tests/test_page.py
if ! (command -v redis-cli >/dev/null && redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379/0}" ping >/dev/null 2>&1); then
    command -v redis-server >/dev/null || need_apt+=(redis-server)
fi
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379/0}" ping >/dev/null 2>&1; then
    echo "starting a local redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# The library every ffmpeg, ffprobe and espeak-ng run starts with: the fork server and the
# sandbox (workers/ffmpeg/forkserver.py, sandbox.py), built again when a source changes
library=workers/ffmpeg/libpreload.so
if [ -n "$(find workers/ffmpeg -name '*.[ch]' -newer "$library" 2>/dev/null)" ] || [ ! -e "$library" ]; then
    cc -O2 -Wall -Wextra -fstack-protector-strong -D_FORTIFY_SOURCE=2 -shared -fPIC -Wl,-z,relro,-z,now \
        -o "$library" workers/ffmpeg/forkserver.c workers/ffmpeg/sandbox.c -ldl
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ "$for_tests" = yes ]; then
    .venv/bin/pip install -q -e '.[dev]'
else
    .venv/bin/pip install -q -e .
fi
