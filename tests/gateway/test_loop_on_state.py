"""The data plane's app keeps the loop serving it on its state (``GatewayState.loop``): a
forwarded call reads it there instead of asking asyncio (a ``getpid()`` each on 3.11)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp.test_utils import TestServer

from garrison.gateway.app import build_app
from garrison.gateway.state import GatewayState
from garrison.store.snapshot import Snapshot


async def test_a_started_app_keeps_its_loop_on_the_state() -> None:
    state = GatewayState(snapshot=Snapshot.empty(), pepper=b"p" * 32, audit=cast(Any, None))
    assert state.loop is None
    async with TestServer(build_app(state)):
        assert state.loop is asyncio.get_running_loop()
