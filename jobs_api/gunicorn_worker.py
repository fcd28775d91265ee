"""`jobs-api serve`'s gunicorn worker (its `--worker-class` and `--config python:` hooks): gthread's,
with three changes: slow clients get no thread, requests gunicorn cannot read get JSON, and
a worker stops at once on Ctrl-C or the master's SIGQUIT, whenever the signal comes.

Slow clients get no thread. gthread gives a connection a thread as soon as its first byte
arrives, and the thread then waits for the rest of the request: 50 clients sending a byte
every 2 s held every thread, and health checks timed out. Here a thread only looks (MSG_PEEK,
without waiting) whether the request's head, and a body of up to PEEK_BODY_BYTES (by its
Content-Length, or up to its last chunk when it is chunked), has arrived whole; if not, the
connection goes back to gthread's poller until more comes. A request not whole within
HEAD_SECONDS of its first byte ends the connection. The poller wakes a waiting connection only
when what it still lacks, or the least of it a chunked body can still lack, has come
(SO_RCVLOWAT), so a request that arrived in part does not keep it readable. A larger body (an
upload) is read by a thread, once the head is in; the key or token is checked before it is read
(jobs_api/app.py, and the upload views). Nor does a thread wait for the rest of a body the
application did not read, or the main thread for a client to close its side after the answer.

Requests gunicorn itself cannot read (a request line over its limit, a broken header) are
answered in JSON like every other error of the service, not with gunicorn's HTML page.

These rely on gthread's `handle(conn)` returning its `_DEFER`, `finish_request(conn, fs)` with
its `nr_conns`, `_keepalive_after(conn, keepalive)` and the parser's `finish_body(max_bytes=...)`
(gunicorn 27), its connection's `sock`, `parser.unreader` and `close()`, and
`Worker.handle_error(req, client, addr, exc)`.

Stopping: two moments used to leave a worker running until the master's SIGKILL, 30 s later:
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
import time
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
from gunicorn.workers.gthread import _DEFER, ThreadWorker

QUIT_SECONDS = 3
HEAD_SECONDS = 10.0
CLOSE_DRAIN_BYTES = 64 * 1024  # what is read of a body nobody reads, or at a close, as gthread's
PEEK_BODY_BYTES = 1024 * 1024  # a job's JSON, but for large inline base64 inputs
PEEK_BYTES = PEEK_BODY_BYTES + 64 * 1024  # what a look sees: a request that needs more is read by a thread
RECEIVE_BUFFER = 2 * PEEK_BYTES
HEAD_END = b"\r\n\r\n"
ABANDONED = object()  # handle's answer for a connection whose head did not arrive in time


UNREADABLE = {LimitRequestLine: (414, "URI Too Long"), LimitRequestHeaders: (431, "Request Header Fields Too Large")}
NOT_THE_CLIENTS = (ConfigurationProblem, InvalidResponseHeader, InvalidResponseHeaderName)


class ServiceWorker(ThreadWorker):
    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        self.alive = False
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(QUIT_SECONDS)

    def init_process(self) -> None:
        # A body waits in the kernel until it is whole, and a socket's automatic receive buffer
        # stops growing while nobody reads: a 235 KB body stalled at 128 KB. Accepted sockets
        # take the listener's buffer size (the kernel caps it at net.core.rmem_max).
        for listener in self.sockets:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        super().init_process()

    def handle(self, conn: Any) -> Any:
        """Read the request only once it has arrived (see the module's docstring)."""
        if self.cfg.is_ssl:  # the bytes in the socket are TLS records: nothing to look at
            return super().handle(conn)
        missing, body_seen = _missing(conn)
        if missing and 0 <= body_seen <= getattr(conn, "body_seen", -1):
            missing = 0  # woken with no more of the body: the kernel holds no more, a thread reads it
        if missing:
            # The poller wakes the connection once that much more has come (or it ends). Without
            # this, a request that has arrived in part leaves its socket readable, and is looked at
            # again and again: three such requests kept both cores busy. The kernel may hold less
            # than asked (half the receive buffer): such a request is read by a thread.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, missing)
            if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) < missing:
                missing = 0
        if not missing:
            conn.head_since, conn.body_seen = None, -1
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            return super().handle(conn)
        since = getattr(conn, "head_since", None) or time.monotonic()
        if time.monotonic() - since > HEAD_SECONDS:
            self.log.warning("request head from %s not whole in %g s: connection closed", conn.client[0],
                             HEAD_SECONDS)
            return ABANDONED
        conn.head_since, conn.body_seen = since, body_seen
        return _DEFER

    def _keepalive_after(self, conn: Any, keepalive: bool) -> Any:
        """gthread's, but the rest of a body the application did not read (a 401 before an
        upload, say) is drained only as far as it has arrived, up to CLOSE_DRAIN_BYTES: a
        connection whose client is still sending it is abandoned, instead of a thread waiting
        up to 5 s for it. (A short deadline instead also abandoned, now and then, connections
        whose body had been read, where the process lost its core before the drain began.)"""
        if self.cfg.is_ssl:
            return super()._keepalive_after(conn, keepalive)
        timeout = conn.sock.gettimeout()
        conn.sock.settimeout(0.0)  # a read that would wait raises instead
        try:
            drained = conn.parser.finish_body(max_bytes=CLOSE_DRAIN_BYTES)
        except OSError:
            drained = False
        finally:
            conn.sock.settimeout(timeout)
        return keepalive if drained else ABANDONED

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gthread's, but a connection that ends is closed at once, and one put back to wait has
        HEAD_SECONDS from its first byte, not gthread's keep-alive time (2 s), before it is
        closed unanswered: a client on a slow link is not cut off.

        gthread's graceful close waits for the client to close its side, for up to 2 s, on the
        worker's main thread: four clients that sent "Connection: close" and then held their
        side open stalled every request. What the client sent has been read or drained before."""
        result = fs.result() if not fs.cancelled() and fs.exception() is None else None
        if result is ABANDONED or not result:
            self.nr_conns -= 1
            _close_at_once(conn.sock)
            return
        super().finish_request(conn, fs)
        if result is _DEFER and conn.head_since is not None:
            # gthread closes the waiting connections from the front of its queue until one has
            # time left: one behind it whose time is up goes at most HEAD_SECONDS late.
            conn.timeout = conn.head_since + HEAD_SECONDS

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


def _close_at_once(sock: socket.socket) -> None:
    """Our side ends (FIN) after what was sent, and what the client sent since, if it is there
    already (up to CLOSE_DRAIN_BYTES), is read first: closing with it unread would reset the
    connection, and the client could lose the answer. Nothing waits for more."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        sock.recv(CLOSE_DRAIN_BYTES)
    except OSError:
        pass  # nothing has come (or the client is gone)
    sock.close()


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


def _missing(conn: Any) -> tuple[int, int]:
    """How many more bytes the socket must hold before the connection's next request may have
    arrived whole (its head, and its body when it declares one of up to PEEK_BODY_BYTES, by its
    length or its chunks), and how much of the request has arrived once its head has (-1
    before). 0 more when it has arrived, and also when the socket has ended or failed: gthread
    then meets that as it would."""
    buffered = conn.parser.unreader.buf.getvalue() if conn.parser is not None else b""
    try:
        waiting = conn.sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        waiting = b""
    except OSError:
        return 0, -1
    else:
        if not waiting:
            return 0, -1  # the client closed its side
    data = buffered + waiting
    end = data.find(HEAD_END)
    if end < 0:
        # a head longer than a look: gunicorn's limits judge it
        return (0 if len(waiting) >= PEEK_BYTES else len(waiting) + 1), -1
    body = end + len(HEAD_END)
    needed = body
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length" and value.isdigit():
            needed = body + int(value)
        elif name == b"transfer-encoding" and value.endswith(b"chunked"):
            needed = _chunked_end(data, body)
        elif name == b"expect":
            return 0, len(data)  # the client waits for gunicorn's 100 Continue before it sends the body
    if needed - body > PEEK_BODY_BYTES or needed > len(buffered) + PEEK_BYTES or len(data) >= needed:
        return 0, len(data)
    return needed - len(buffered), len(data)


LAST_CHUNK = b"0\r\n\r\n"


def _chunked_end(data: bytes, at: int) -> int:
    """Where a chunked body that begins at `at` ends once its last chunk has arrived; until then
    the least it can end at, so that a body dripped a chunk at a time waits like any other. A
    size that is not hex ends it at once: gunicorn refuses it."""
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return len(data) + 1
        try:
            size = int(data[at:line_end].partition(b";")[0], 16)
        except ValueError:
            return at
        if size == 0:  # then the trailer's lines, up to an empty one
            trailer_end = data.find(HEAD_END, line_end)
            return trailer_end + len(HEAD_END) if trailer_end >= 0 else len(data) + 1
        at = line_end + 2 + size + 2
        if at > len(data):
            return at + len(LAST_CHUNK)
