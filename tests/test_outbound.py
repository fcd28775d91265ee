"""The outbound guard: which addresses are reachable, and how fetching stops."""
from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobs_api.outbound import Allowance, OutboundFailed, OutboundRefused, fetch_to_file, is_http_url, is_public, post

NOTHING = Allowance.parse([])
LOOPBACK = Allowance.parse(["127.0.0.1"])


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x/", "ftp://example.com/a", "HTTP://user:pw@1.2.3.4/"])
def test_only_plain_http_and_https(url: str) -> None:
    with pytest.raises(OutboundRefused):
        fetch_to_file(url, io.BytesIO(), allow=NOTHING, max_bytes=10, timeout=5)


def test_uppercase_scheme_is_still_checked() -> None:
    with pytest.raises(OutboundRefused, match="private"):
        fetch_to_file("HTTP://127.0.0.1:9/", io.BytesIO(), allow=NOTHING, max_bytes=10, timeout=5)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        self._drip(b"thanks " * 100)  # a receiver that answers slowly for ever

    def _drip(self, data: bytes) -> None:
        for byte in data:  # a byte every 0.2 s: each read is quick, the whole never ends in time
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/drip-headers"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(b"X-Slow: " + b"a" * 1000)
        elif self.path.startswith("/drip-body"):
            self.send_response(200)
            self.end_headers()
            self._drip(b"z" * 1000)
        elif self.path.startswith("/redirect-private"):
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/secret")
            self.end_headers()
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path.startswith("/huge-declared"):
            # Declares far more than the limit and sends little: refused before reading.
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"x" * 50)
        elif self.path.startswith("/gzip"):
            # Encoded although nobody asked (some servers compress everything): 20 kB of zeros in 40 bytes.
            body = gzip.compress(b"\0" * 20_000)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/redirect-ok"):
            self.send_response(301)
            self.send_header("Location", "/data")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav; charset=binary")
            self.end_headers()
            self.wfile.write(b"y" * 3000)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_loopback_needs_the_allowance(server: str) -> None:
    with pytest.raises(OutboundRefused):
        fetch_to_file(f"{server}/data", io.BytesIO(), allow=NOTHING, max_bytes=10_000, timeout=5)
    sink = io.BytesIO()
    fetched = fetch_to_file(f"{server}/redirect-ok", sink, allow=LOOPBACK, max_bytes=10_000, timeout=5)
    assert fetched.size == 3000 and sink.getvalue() == b"y" * 3000
    assert fetched.content_type == "audio/wav" and fetched.filename == "data"
    assert fetched.sha256 == hashlib.sha256(b"y" * 3000).hexdigest()


def test_every_redirect_hop_is_checked(server: str) -> None:
    with pytest.raises(OutboundRefused, match="private"):
        fetch_to_file(f"{server}/redirect-private", io.BytesIO(), allow=LOOPBACK, max_bytes=10_000, timeout=5)


def test_redirect_loops_stop(server: str) -> None:
    with pytest.raises(OutboundFailed, match="redirects"):
        fetch_to_file(f"{server}/loop", io.BytesIO(), allow=LOOPBACK, max_bytes=10_000, timeout=5)


def test_byte_limit_is_counted_without_a_length_header(server: str) -> None:
    sink = io.BytesIO()
    with pytest.raises(OutboundFailed, match="larger than"):
        fetch_to_file(f"{server}/data", sink, allow=LOOPBACK, max_bytes=1000, timeout=5)
    assert len(sink.getvalue()) <= 1000


def test_a_declared_size_over_the_limit_is_refused_before_reading(server: str) -> None:
    sink = io.BytesIO()
    with pytest.raises(OutboundFailed, match="larger than"):
        fetch_to_file(f"{server}/huge-declared", sink, allow=LOOPBACK, max_bytes=1000, timeout=5)
    assert sink.getvalue() == b""


def test_an_encoded_answer_is_stored_decoded_and_its_decoded_size_is_limited(server: str) -> None:
    sink = io.BytesIO()
    fetched = fetch_to_file(f"{server}/gzip", sink, allow=LOOPBACK, max_bytes=100_000, timeout=5)
    assert sink.getvalue() == b"\0" * 20_000 and fetched.size == 20_000
    with pytest.raises(OutboundFailed, match="larger than"):
        fetch_to_file(f"{server}/gzip", io.BytesIO(), allow=LOOPBACK, max_bytes=10_000, timeout=5)


@pytest.mark.parametrize("path", ["/drip-headers", "/drip-body"])
def test_a_server_that_drips_is_cut_off_at_the_deadline(server: str, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(OutboundFailed, match="1 seconds"):
        fetch_to_file(f"{server}{path}", io.BytesIO(), allow=LOOPBACK, max_bytes=10_000, timeout=1)
    assert time.monotonic() - started < 5  # not the 200 s the whole drip takes


def test_a_callback_does_not_wait_for_the_receivers_body(server: str) -> None:
    started = time.monotonic()
    assert post(f"{server}/hook", b"{}", {}, allow=LOOPBACK, timeout=3) == 200
    assert time.monotonic() - started < 3  # the body's 700 bytes at 5 a second are not waited for


def test_an_internationalised_host_is_encoded_and_a_broken_one_refused() -> None:
    assert is_http_url("http://bücher.example/a.wav")
    assert not is_http_url("http://a..b/a.wav") and not is_http_url("http://\udcff.example/")
    with pytest.raises(OutboundRefused, match="valid host name"):
        fetch_to_file("http://a..b/x", io.BytesIO(), allow=NOTHING, max_bytes=10, timeout=1)
    with pytest.raises(OutboundFailed, match="xn--bcher-kva.invalid"):  # resolved as its ASCII name
        fetch_to_file("http://bücher.invalid/x", io.BytesIO(), allow=NOTHING, max_bytes=10, timeout=1)
