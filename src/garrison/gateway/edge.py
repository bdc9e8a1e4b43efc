"""The HTTP edge both planes share: request ids, the presented key, the peer address
(trusted-proxy aware), reading a bounded body, and errors in an API's own shape.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from garrison.domain import UpstreamApi
from garrison.errors import (
    GarrisonError,
    PayloadTooLarge,
    RequestTimeout,
)
from garrison.gateway import apis
from garrison.gateway.admission_limits import Ticket
from garrison.gateway.client_address import client_address, parse_address
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import (
    REQUEST_ID_HEADER,
)

if TYPE_CHECKING:
    pass


_JSON = "application/json"


STATE_KEY: web.AppKey[GatewayState] = web.AppKey("garrison_state", GatewayState)


# Stands in when the peer address cannot be read (never matches a key's networks list).
UNKNOWN_ADDRESS = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 - a value, not a bind


class RequestIds:
    """UUID-shaped request ids (llama-cpp-python refuses any other form): 64 random bits per
    process, then a counter. Unique across processes and restarts, and no system call per
    request (``os.urandom`` per call cost 3.6 % of the event loop and handed the GIL to the
    audit thread mid-request). Request ids are labels, not secrets."""

    def __init__(self) -> None:
        self._prefix = int.from_bytes(os.urandom(8), "big")
        self._counter = itertools.count()

    def __call__(self) -> str:
        value = (self._prefix << 64) | (next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF)
        return str(uuid.UUID(int=value, version=4))

    @property
    def prefix(self) -> str:
        """What every id of this process starts with (``xxxxxxxx-xxxx-4xxx``): the process's
        instance id, by which its calls are found after it dies."""
        return str(uuid.UUID(int=self._prefix << 64, version=4))[:18]


new_request_id = RequestIds()


# ── helpers ────────────────────────────────────────────────────────────────────────────────
def error_response(api: UpstreamApi, exc: GarrisonError, request_id: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id}
    if exc.status == 401 and api is UpstreamApi.OPENAI:
        headers["www-authenticate"] = 'Bearer realm="garrison"'
    return web.Response(
        status=exc.status, body=apis.error_body(api, exc), content_type=_JSON, headers=headers
    )


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return ""
    return request.headers.get("x-api-key")


def peer_address(
    request: web.Request, state: GatewayState
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    peer = None
    transport = request.transport
    if transport is not None:
        info = transport.get_extra_info("peername")
        if isinstance(info, tuple) and info:
            peer = parse_address(str(info[0]))
    if peer is None:
        return UNKNOWN_ADDRESS
    if not state.trusted_proxies:
        return peer
    lines = request.headers.getall(state.forwarded_header, ())
    return client_address(peer, lines, state.trusted_proxies, state.forwarded_header)


async def read_body(
    request: web.Request,
    state: GatewayState,
    limit: int | None = None,
    ticket: Ticket | None = None,
) -> bytes:
    """The body, within ``limit`` and the body-read deadline; with a ``ticket``, its bytes
    are charged to the buffered-body budget before they are held (``Refused`` if over)."""
    limit = state.limits.max_body_bytes if limit is None else limit
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
        async with asyncio.timeout(state.limits.body_read_timeout_s):
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
