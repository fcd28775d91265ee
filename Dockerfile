# One image for the API and the worker: `jobs-api serve` (default) or `jobs-api worker`.

# The library ffmpeg, ffprobe and espeak-ng start with: the fork server and the sandbox
# (workers/ffmpeg/forkserver.py, sandbox.py), built where a compiler is.
FROM python:3.11-slim-bookworm AS preload
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev linux-libc-dev
COPY workers/ffmpeg/*.c workers/ffmpeg/*.h /build/
RUN cc -O2 -Wall -Wextra -fstack-protector-strong -D_FORTIFY_SOURCE=2 -shared -fPIC -Wl,-z,relro,-z,now \
    -o /build/libpreload.so /build/forkserver.c /build/sandbox.c -ldl

FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg espeak-ng procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app

WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobs_api ./jobs_api
COPY workers ./workers
COPY --from=preload /build/libpreload.so ./workers/ffmpeg/
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
    && mkdir -p /data/storage && chown -R app:app /data

USER app
ENV STORAGE_DIR=/data/storage \
    DATABASE_URL=sqlite:////data/jobs.db \
    HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
VOLUME ["/data"]
CMD ["jobs-api", "serve"]
