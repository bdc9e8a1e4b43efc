"""Prometheus metrics on their own listener, bound to loopback by default.

A scraper must not need a rotating human credential: this listener needs none, so it listens
only where the operator puts it (``[metrics] listen``, default ``127.0.0.1:9464``; an empty
value turns it off). Per-model labels are off unless ``[metrics] model_labels = true`` —
the names of restricted models are themselves sensitive.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from garrison.domain.networks import parse_listen
from garrison.gateway.state import GatewayState
from garrison.metrics import render

log = logging.getLogger("garrison.metrics")


class MetricsListener:
    def __init__(self, state: GatewayState, monitor: Any, listen: str) -> None:
        self.host, self.port = parse_listen(listen)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._state = state
        self._monitor = monitor
        self._runner = web.AppRunner(app, access_log=None)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=render(self._state, self._monitor), content_type="text/plain", charset="utf-8"
        )

    async def start(self) -> int | None:
        """Listen; the port, or None (logged loudly) if the address cannot be bound: the
        gateway keeps serving without this listener."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("METRICS LISTENER NOT STARTED on %s:%d: %s", self.host, self.port, exc)
            await self._runner.cleanup()
            return None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
