"""How `jobs-api serve`'s gunicorn workers stop: at once, on Ctrl-C or the master's SIGQUIT,
whenever the signal comes (its `--worker-class` and `--config python:` hooks); and how they
answer a request gunicorn itself cannot read (a request line over its limit, a broken header):
in JSON like every other error of the service, where gunicorn writes an HTML page. This relies
on gunicorn's `Worker.handle_error(req, client, addr, exc)` and its `ParseException` (23-25).

Two moments used to leave a worker running until the master's SIGKILL, 30 s later:
- gthread's SIGQUIT handler shuts its thread pool down, and gunicorn's then raises SystemExit,
  both from inside the handler, that is wherever the main thread was. In the pool's `submit`
  (handing over a new connection) the first deadlocked on the lock `submit` held; in a thread's
  start the second broke a Condition. Here the handler only ends the worker's loop, which looks
  every second; the pool is shut down as the loop ends, and SIGALRM's default action ends a
  worker still there QUIT_SECONDS later.
- A worker just forked keeps the master's handlers until it sets its own, and they only queue
  the signal for a master that is not there. Now the master holds stop signals back while it
  forks, and the new worker takes them with their default action (it ends) until it sets its
  own handlers.
"""
from __future__ import annotations

import json
import os
import signal
import socket
from types import FrameType
from typing import Any

from gunicorn.http.errors import (
    ConfigurationProblem,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
)
from gunicorn.workers.gthread import ThreadWorker

QUIT_SECONDS = 3


UNREADABLE = {LimitRequestLine: (414, "URI Too Long"), LimitRequestHeaders: (431, "Request Header Fields Too Large")}
NOT_THE_CLIENTS = (ConfigurationProblem, InvalidResponseHeader, InvalidResponseHeaderName)


class QuittingThreadWorker(ThreadWorker):
    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        self.alive = False
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(QUIT_SECONDS)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, ParseException) or isinstance(exc, NOT_THE_CLIENTS):
            super().handle_error(req, client, addr, exc)
            return
        status, reason = UNREADABLE.get(type(exc), (400, "Bad Request"))
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        body = json.dumps({"message": f"{reason}: the request could not be read.", "code": status,
                           "errors": {"request": [type(exc).__name__]}}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            client.sendall(head + body)
        except OSError:
            pass  # the client has gone


STOPS = {signal.SIGINT, signal.SIGQUIT, signal.SIGTERM}


def on_starting(_server: Any) -> None:
    os.register_at_fork(before=_hold_stops, after_in_parent=_release_stops, after_in_child=_stops_end_the_child)


def _hold_stops() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)


def _release_stops() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


def _stops_end_the_child() -> None:
    for stop in STOPS:
        signal.signal(stop, signal.SIG_DFL)
    _release_stops()
