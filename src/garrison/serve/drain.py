"""Stopping without dropping calls: take nothing new, let the calls in flight finish for a
while, then cut the rest with an error in their API's shape."""

from __future__ import annotations

import asyncio
import logging
import time

from garrison.domain import Reason
from garrison.gateway.containment import Cut
from garrison.gateway.http_server import HttpServer
from garrison.gateway.state import GatewayState

log = logging.getLogger("garrison.gateway")

# While draining, how often the live calls are counted.
DRAIN_POLL_S = 0.05
# After the drain deadline cuts the remaining calls, how long they get to write their final
# error event and outcome record before the listener is torn down.
CUT_SETTLE_S = 2.0


async def drain(state: GatewayState, http: HttpServer, deadline_s: float) -> int:
    """Stop taking calls and let those in flight finish, for at most ``deadline_s``; then
    cut the rest, recorded as ``shutdown``. Returns how many were cut."""
    state.draining = True
    http.stop_accepting()
    end = time.monotonic() + deadline_s
    # Polled (the live set is the data plane's own; a 50 ms step is nothing at shutdown).
    while state.live and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(DRAIN_POLL_S)
    cut = 0
    for call in list(state.live):
        if call.cut is None and call.task is not None:
            call.cut = Cut(Reason.SHUTTING_DOWN)
            call.task.cancel()
            cut += 1
    # The cut calls write their final error event and outcome record, then leave.
    end = time.monotonic() + CUT_SETTLE_S
    # Polled (the live set is the data plane's own; a 50 ms step is nothing at shutdown).
    while state.live and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(DRAIN_POLL_S)
    if cut:
        log.warning("drain deadline passed: cut %d call(s)", cut)
    return cut
