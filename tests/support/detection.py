"""Helpers shared by the detection and response tests (``tests/respond``): an event the
built-in rules alert on, a call from a chosen local address, and a bounded poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp

from garrison.audit.events import AuditEvent, EventName

# Longest a poll waits by default: detection, playbooks and propagation take milliseconds to
# a few seconds; this is only a safety net.
WAIT_S = 20.0


def out_of_network(key_id: str, at: float) -> AuditEvent:
    """A refusal the built-in ``key-out-of-network`` rule turns into a finding about
    ``key_id`` (high: its playbook only notifies)."""
    return AuditEvent(
        EventName.REQUEST_DENIED,
        at=at,
        request_id=f"req-{key_id}",
        data={
            "status": 403,
            "reasons": ["credential.network_not_allowed"],
            "presented_key_id": key_id,
            "client_address": "10.1.2.3",
        },
    )


async def chat_from(
    base: str, key: str, addr: str, *, content: str = "hello", model: str = "assistant"
) -> tuple[int, bytes]:
    """One chat call to the gateway at ``base`` from local address ``addr`` (a loopback
    address: the rules see it as the caller's network); its status and body."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    connector = aiohttp.TCPConnector(local_addr=(addr, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status, await resp.read()


def wait_for(check: Callable[[], Any], what: str, within: float = WAIT_S) -> Any:
    """``check()`` until it returns something truthy, which is returned; AssertionError
    naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.01)
