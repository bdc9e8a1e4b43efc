"""The HTTP listener: aiohttp's protocol with a deadline on slow request heads.

aiohttp bounds header sizes but has no timeout for a client that sends a request head one
byte at a time (slowloris). ``_HeadDeadline`` closes a connection whose request head has not
fully arrived ``header_read_timeout_s`` after its first byte.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from ssl import SSLContext
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from garrison.domain import Network, UpstreamApi
from garrison.errors import BadRequest, ServerError
from garrison.gateway.apis import error_body
from garrison.gateway.connections import RESERVE_ATTRIBUTE, Admit, ConnectionTable
from garrison.gateway.limits import GatewayLimits

log = logging.getLogger("garrison.gateway")

# What every answer says in its Server header (never the Python or aiohttp version).
SERVER_NAME = "garrison"
# Pending connections the kernel queues for us: enough for a burst of 1,000 new clients.
LISTEN_BACKLOG = 2048


class _HeadDeadline(RequestHandler):
    """Arms a timer when bytes arrive while no request is being handled; a parsed head
    disarms it. Reads aiohttp's ``_request_count`` and ``_current_request`` (covered by the
    tests of this limit, which fail if aiohttp renames them)."""

    _deadline: asyncio.TimerHandle | None = None
    _head_timeout: float = 10.0
    _table: ConnectionTable | None = None
    _source: str | None = None
    garrison_reserve = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._table is not None:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) and peer else None
            admit, source = self._table.admit(host)
            if admit is Admit.REFUSE:
                # Over its source's cap or the process cap: the descriptor is freed at once.
                assert isinstance(transport, asyncio.Transport)
                transport.abort()
                return
            self._source = source
            setattr(self, RESERVE_ATTRIBUTE, admit is Admit.RESERVE)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()
        elif self._deadline is None and self._current_request is None:
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._table is not None and self._source is not None:
            self._table.leave(self._source)
            self._source = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self._head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._current_request is None and self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """aiohttp's own error page quotes the offending bytes (which may hold a key) and logs
        a traceback; ours names only the exception type and answers in the OpenAI shape."""
        log.warning("refused unparseable request (%s, status %d)", type(exc).__name__, status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        error = (
            BadRequest(public_message="Malformed HTTP request.") if status < 500 else ServerError()
        )
        response = Response(
            status=status,
            body=error_body(UpstreamApi.OPENAI, error),
            content_type="application/json",
            # Answered outside the application, so its response hook does not name us:
            # without this aiohttp announces "Python/3.11 aiohttp/x.y".
            headers={"Server": SERVER_NAME},
        )
        response.force_close()
        return response


class HttpServer:
    def __init__(
        self, app: web.Application, limits: GatewayLimits, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        self.app = app
        self.limits = limits
        self.connections = ConnectionTable(limits, trusted_proxies)
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=limits.keepalive_timeout_s,
            max_line_size=limits.max_header_field_bytes,
            max_field_size=limits.max_header_field_bytes,
            max_headers=limits.max_headers,
            shutdown_timeout=5.0,
        )
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> int:
        """Listen on ``host:port`` (HTTPS with ``ssl``); returns the bound port."""
        await self._runner.setup()
        web_server = self._runner.server
        assert web_server is not None
        kwargs: dict[str, Any] = {
            "keepalive_timeout": self.limits.keepalive_timeout_s,
            "max_line_size": self.limits.max_header_field_bytes,
            "max_field_size": self.limits.max_header_field_bytes,
            "max_headers": self.limits.max_headers,
            "access_log": None,
        }
        loop = asyncio.get_running_loop()
        timeout = self.limits.header_read_timeout_s

        def factory() -> RequestHandler:
            handler = _HeadDeadline(web_server, loop=loop, **kwargs)
            handler._head_timeout = timeout
            handler._table = self.connections
            return handler

        self._server = await loop.create_server(
            factory,
            host,
            port,
            backlog=LISTEN_BACKLOG,
            reuse_address=True,
            ssl=ssl,
            # A client that connects and never finishes its handshake is cut like a slow head.
            ssl_handshake_timeout=timeout if ssl is not None else None,
        )
        sock: socket.socket = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    def stop_accepting(self) -> None:
        """Close the listening socket: no new connections; open ones keep being served."""
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        self.stop_accepting()
        await self._runner.cleanup()
