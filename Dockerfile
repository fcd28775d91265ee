# One image for the API and the worker: `jobs-api serve` (default) or `jobs-api worker`.

# ffmpeg's fork server (workers/ffmpeg/forkserver.py), built where a compiler is.
FROM python:3.11-slim-bookworm AS forkserver
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev
COPY workers/ffmpeg/forkserver.c /build/
RUN cc -O2 -Wall -Wextra -fstack-protector-strong -D_FORTIFY_SOURCE=2 -shared -fPIC -Wl,-z,relro,-z,now \
    -o /build/libforkserver.so /build/forkserver.c -ldl

FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg espeak-ng procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app

WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobs_api ./jobs_api
COPY workers ./workers
COPY --from=forkserver /build/libforkserver.so ./workers/ffmpeg/
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
    && mkdir -p /data/storage && chown -R app:app /data

USER app
ENV STORAGE_DIR=/data/storage \
    DATABASE_URL=sqlite:////data/jobs.db \
    PORT=8000
EXPOSE 8000
VOLUME ["/data"]
CMD ["jobs-api", "serve"]
