"""A one-route upstream on loopback, for tests that need an upstream the mock cannot play."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler


@contextlib.asynccontextmanager
async def one_route_upstream(path: str, handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` at POST ``path`` on 127.0.0.1; yields the port."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
