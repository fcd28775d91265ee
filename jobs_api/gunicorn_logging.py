"""gunicorn's logs as the service wants them: no access line for the probes (a load balancer or
Prometheus asking every few seconds would drown the requests that matter), and with
LOG_FORMAT=json every access and error line one JSON object."""
from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from jobs_api.config import Config
from jobs_api.logs import formatter

PROBE_PATHS = frozenset(("/livez", "/readyz", "/health", "/metrics"))


class ServiceLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.json = Config.from_env().log_format == "json"
        if self.json:
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(formatter("json"))

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if environ.get("PATH_INFO") in PROBE_PATHS:
            return
        if not self.json:
            super().access(resp, req, environ, request_time)
            return
        atoms = self.atoms(resp, req, environ, request_time)
        self.access_log.info("%s %s %s", atoms["m"], atoms["U"], atoms["s"], extra={
            "method": atoms["m"], "path": atoms["U"], "query": atoms["q"], "status": atoms["s"],
            "bytes": atoms["B"], "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "remote": atoms["h"], "user_agent": atoms["a"]})
