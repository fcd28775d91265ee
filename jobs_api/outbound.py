"""Requests to addresses that strangers give us (remote inputs, callbacks).

Each hop's host is resolved once, every address is checked, and the connection goes to
the checked address, so DNS rebinding cannot swap it. Redirects are followed by hand.
"""
from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit

import urllib3

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
    a host. Where it leads is checked when it is used (`fetch_to_file`, `post`)."""
    parts = urlsplit(value)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


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
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise OutboundRefused("The URL has no host.")
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
            raise OutboundRefused(
                f"The host {host} resolves to a private or reserved address; it is not reachable from here."
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Hop(scheme, host, port, str(addresses[0]), path)


def _request(
    method: str, url: str, allow: Allowance, timeout: float, *,
    body: bytes | None = None, headers: dict[str, str] | None = None, follow: bool = True,
) -> tuple[urllib3.BaseHTTPResponse, str]:
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
        default_port = 443 if hop.scheme == "https" else 80
        host_header = hop.host if hop.port == default_port else f"{hop.host}:{hop.port}"
        try:
            response = pool.urlopen(
                method, hop.path, body=body, headers={**(headers or {}), "Host": host_header},
                redirect=False, preload_content=False, assert_same_host=False,
            )
        except urllib3.exceptions.HTTPError as exc:
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
    deadline = time.monotonic() + timeout
    response, final_url = _request("GET", url, allow, timeout)
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
                if time.monotonic() > deadline:
                    raise OutboundFailed(f"The download took longer than {timeout:g} seconds.")
                destination.write(chunk)
                digest.update(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise OutboundFailed("The download of the input was interrupted.") from exc
        return Fetched(_filename(response, final_url), _content_type(response), size, digest.hexdigest())
    finally:
        response.release_conn()


def post(url: str, body: bytes, headers: dict[str, str], *, allow: Allowance, timeout: float) -> int:
    """POST `body` to `url` (no redirects followed); return the HTTP status."""
    response, _ = _request("POST", url, allow, timeout, body=body, headers=headers, follow=False)
    try:
        response.drain_conn()
        return response.status
    finally:
        response.release_conn()


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
