"""gunicorn's access log without the probes: a load balancer or Prometheus asking every few
seconds would otherwise drown the requests that matter."""
from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

PROBE_PATHS = frozenset(("/livez", "/readyz", "/health", "/metrics"))


class AccessLogWithoutProbes(Logger):
    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if environ.get("PATH_INFO") in PROBE_PATHS:
            return
        super().access(resp, req, environ, request_time)
