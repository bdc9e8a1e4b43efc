"""What both planes read off a request the same way: the presented key, the peer address
(trusted-proxy aware), and a body read within a size limit and a deadline."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Protocol

from aiohttp import web

from garrison.domain import Network
from garrison.edge.client_address import ForwardedHeader, client_address, parse_address
from garrison.errors import PayloadTooLarge, RequestTimeout

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Stands in when the peer address cannot be read (never matches a key's networks list).
UNKNOWN_ADDRESS = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 - a value, not a bind


class BodyLimits(Protocol):
    """The body limits of the process's ``[gateway]`` settings."""

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def body_read_timeout_s(self) -> float: ...


class EdgeSettings(Protocol):
    """What the edge reads of the process: whom to believe about addresses, body limits."""

    @property
    def trusted_proxies(self) -> tuple[Network, ...]: ...

    @property
    def forwarded_header(self) -> ForwardedHeader: ...

    @property
    def limits(self) -> BodyLimits: ...


class BodyCharge(Protocol):
    """A budget the body's bytes are charged to before they are held (``Refused`` if over)."""

    def charge(self, amount: int) -> None: ...


def presented_key(request: web.Request) -> str | None:
    """The key a caller presents: ``Authorization: Bearer <key>`` or ``x-api-key``; an
    Authorization header of another scheme presents an empty key."""
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return ""
    return request.headers.get("x-api-key")


def peer_certificate(request: web.Request) -> bytes | None:
    """The DER certificate the client presented in this connection's TLS handshake, which
    the listener verified against ``[gateway] tls_client_ca_file`` (None: plain HTTP, or
    no certificate sent). Never read from a header: behind a proxy that ends TLS there is
    none."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der if isinstance(der, bytes) and der else None


def peer_address(request: web.Request, edge: EdgeSettings) -> Address:
    """The client's address: the TCP peer, or what trusted proxies say it is."""
    peer = None
    transport = request.transport
    if transport is not None:
        info = transport.get_extra_info("peername")
        if isinstance(info, tuple) and info:
            peer = parse_address(str(info[0]))
    if peer is None:
        return UNKNOWN_ADDRESS
    if not edge.trusted_proxies:
        return peer
    lines = request.headers.getall(edge.forwarded_header, ())
    return client_address(peer, lines, edge.trusted_proxies, edge.forwarded_header)


async def read_body(
    request: web.Request,
    edge: EdgeSettings,
    limit: int | None = None,
    ticket: BodyCharge | None = None,
) -> bytes:
    """The body, within ``limit`` and the body-read deadline; with a ``ticket``, its bytes
    are charged to the buffered-body budget before they are held (``Refused`` if over)."""
    limit = edge.limits.max_body_bytes if limit is None else limit
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"declared {declared} bytes")
    if ticket is not None and declared is not None:
        ticket.charge(declared)
    content = request.content
    if content.is_eof():
        # The whole body came with the head (the usual case): no timer needed.
        raw = content.read_nowait(-1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        if ticket is not None and declared is None:
            ticket.charge(len(raw))
        return raw
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(edge.limits.body_read_timeout_s):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body over {limit} bytes")
                if ticket is not None and declared is None:
                    ticket.charge(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout("body read timeout") from None
    return b"".join(chunks)
