"""Requests to addresses that strangers give us (remote inputs, callbacks).

Each hop's host is resolved once, every address is checked, and the connection goes to
the checked address, so DNS rebinding cannot swap it. Redirects are followed by hand. Each
request ends at its deadline, whatever it waits for (a server that sends its headers or its
body a byte at a time included): a watch shuts its sockets down then.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The URL is not one we are allowed to reach."""


class OutboundFailed(Exception):
    """The request was allowed but did not succeed."""


@dataclass(frozen=True)
class Fetched:
    filename: str | None
    content_type: str | None
    size: int
    sha256: str  # of the bytes written


@dataclass(frozen=True)
class Allowance:
    """OUTBOUND_ALLOW: hosts or networks let through despite being private."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...] | list[str]) -> Allowance:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: IPAddress) -> bool:
        if host in self.hosts:
            return True
        return any(address in network for network in self.networks)


def is_http_url(value: str) -> bool:
    """Whether a URL a client gives is one we may fetch or post to at all: http or https, with
    a host that is a valid (internationalised) name. Where it leads is checked when it is used
    (`fetch_to_file`, `post`)."""
    parts = urlsplit(value)
    return parts.scheme.lower() in ("http", "https") and ascii_host(parts.hostname or "") is not None


def ascii_host(host: str) -> str | None:
    """The host as DNS, TLS and the Host header take it (IDNA: bücher.example is
    xn--bcher-kva.example); None if it is empty or no valid name."""
    try:
        encoded = host.lower().rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return encoded or None


class _Watch:
    """A request's deadline: at it, every socket the request opened is shut down, which ends
    whatever read or connect is waiting. Per-read time-outs alone let a server that sends a
    byte now and then hold the request for as long as it likes."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.expired = seconds, False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                _shut(sock)

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def end(self) -> None:
        self.timer.cancel()

    def connection_class(self, https: bool) -> type[HTTPConnection]:
        watch, base = self, HTTPSConnection if https else HTTPConnection

        class Watched(base):  # type: ignore[valid-type,misc]
            def _new_conn(self) -> socket.socket:
                sock: socket.socket = super()._new_conn()
                watch.add(sock)
                return sock

        return Watched


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)  # plain IPv4 in disguise: judge the IPv4
    inner = _embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_link_local
    )


@dataclass(frozen=True)
class _Hop:
    scheme: str
    host: str
    port: int
    address: str
    path: str


def _resolve(url: str, allow: Allowance) -> _Hop:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise OutboundRefused("Only http and https URLs are accepted.")
    if parts.username or parts.password:
        raise OutboundRefused("URLs with credentials are not accepted.")
    if not parts.hostname:
        raise OutboundRefused("The URL has no host.")
    host = ascii_host(parts.hostname)
    if host is None:
        raise OutboundRefused("The URL's host is not a valid host name.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise OutboundRefused("The URL has an invalid port.") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundFailed(f"The host {host} could not be resolved.") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if not is_public(address) and not allow.permits(host, address):
            # For the operator only: the client is not told how the service's fence is set.
            log.warning("refused %s (%s): a private or reserved address; OUTBOUND_ALLOW can let chosen hosts "
                        "or networks through", host, address)
            raise OutboundRefused(
                f"The host {host} resolves to a private or reserved address; it is not reachable from here."
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Hop(scheme, host, port, str(addresses[0]), path)


def _request(
    method: str, url: str, allow: Allowance, watch: _Watch, *,
    body: bytes | None = None, headers: dict[str, str] | None = None, follow: bool = True,
) -> tuple[urllib3.BaseHTTPResponse, str]:
    timeout = watch.seconds
    for _ in range(MAX_REDIRECTS + 1):
        hop = _resolve(url, allow)
        pool_timeout = urllib3.Timeout(connect=min(10.0, timeout), read=timeout)
        pool: urllib3.HTTPConnectionPool
        if hop.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                hop.address, hop.port, timeout=pool_timeout, retries=False,
                server_hostname=hop.host, assert_hostname=hop.host, cert_reqs="CERT_REQUIRED",
            )
        else:
            pool = urllib3.HTTPConnectionPool(hop.address, hop.port, timeout=pool_timeout, retries=False)
        pool.ConnectionCls = watch.connection_class(hop.scheme == "https")
        default_port = 443 if hop.scheme == "https" else 80
        host_header = hop.host if hop.port == default_port else f"{hop.host}:{hop.port}"
        try:
            response = pool.urlopen(
                method, hop.path, body=body, headers={**(headers or {}), "Host": host_header},
                redirect=False, preload_content=False, assert_same_host=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            if watch.expired:
                raise OutboundFailed(f"The server at {hop.host} did not answer within {timeout:g} seconds.") from exc
            raise OutboundFailed(f"The server at {hop.host} could not be reached.") from exc
        location = response.headers.get("Location")
        if follow and response.status in (301, 302, 303, 307, 308) and location:
            response.release_conn()
            url = urljoin(url, location)
            continue
        return response, url
    raise OutboundFailed(f"Too many redirects (more than {MAX_REDIRECTS}).")


def fetch_to_file(
    url: str, destination: IO[bytes], *, allow: Allowance, max_bytes: int, timeout: float,
) -> Fetched:
    """Stream `url` into `destination` (hashing it on the way), refusing to go past `max_bytes`
    or `timeout` seconds."""
    watch = _Watch(timeout)
    try:
        response, final_url = _request("GET", url, allow, watch)
    except BaseException:
        watch.end()
        raise
    try:
        if response.status >= 400:
            raise OutboundFailed(f"The server answered HTTP {response.status} for the input URL.")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise OutboundFailed(f"The input is larger than the limit of {max_bytes} bytes.")
        # The bytes as sent unless the server encoded them anyway (no Accept-Encoding is sent):
        # urllib3's decoding path copies every chunk twice more through a buffer.
        encoded = response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"
        size, digest = 0, hashlib.sha256()
        try:
            for chunk in response.stream(CHUNK, decode_content=encoded):
                size += len(chunk)
                if size > max_bytes:
                    raise OutboundFailed(f"The input is larger than the limit of {max_bytes} bytes.")
                destination.write(chunk)
                digest.update(chunk)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if watch.expired:
                raise OutboundFailed(f"The download took longer than {timeout:g} seconds.") from exc
            raise OutboundFailed("The download of the input was interrupted.") from exc
        if watch.expired:  # the last read ended at the shutdown: the body may be cut short
            raise OutboundFailed(f"The download took longer than {timeout:g} seconds.")
        return Fetched(_filename(response, final_url), _content_type(response), size, digest.hexdigest())
    finally:
        watch.end()
        response.release_conn()


def post(url: str, body: bytes, headers: dict[str, str], *, allow: Allowance, timeout: float) -> int:
    """POST `body` to `url` (no redirects followed); return the HTTP status. The answer's body is
    not read: only its status counts, and a receiver could send that body for ever."""
    watch = _Watch(timeout)
    try:
        response, _ = _request("POST", url, allow, watch, body=body, headers=headers, follow=False)
        response.close()
        return response.status
    finally:
        watch.end()


def _content_type(response: Any) -> str | None:
    value = response.headers.get("Content-Type")
    return value.split(";")[0].strip() or None if value else None


def _filename(response: Any, url: str) -> str | None:
    disposition = response.headers.get("Content-Disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            return Path(value.strip('"')).name or None
    name = Path(unquote(urlsplit(url).path)).name
    return name or None
