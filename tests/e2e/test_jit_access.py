"""Just-in-time access end to end with the real ``openai`` client, on a gateway whose clock
the test moves: a critical model is a 404 without a grant, answers once two approvers have
approved, and is a 404 again when the grant's time is up (on the gateway's clock) or the
grant is revoked.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from garrison.domain import Level
from garrison.server import Gateway
from tests.support.admin import admin_call, make_admin
from tests.support.world import UPSTREAM_KEY, World, start_world, stop_world

pytestmark = pytest.mark.e2e

HOUR = 3600.0
USER: list[Any] = [{"role": "user", "content": "hello"}]


class FakeClock:
    """The gateway's clock: starts at the real time and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def set(self, at: float) -> None:
        self.now = at

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Stage:
    world: World
    clock: FakeClock
    requester: str  # key of "ivan": internal, cleared critical, no admin role
    approvers: tuple[str, str]

    async def api(self, key: str, method: str, path: str, body: Any = None) -> Any:
        status, answer = await admin_call(self.world, key, method, path, body)
        assert status in (200, 201), (method, path, status, answer)
        return answer

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.world.base}/v1", api_key=self.requester, max_retries=0
        )

    async def granted(self, hours: float) -> str:
        """Ask for the model for ``hours`` and have both approvers approve; the grant id."""
        body = {"model": "oracle", "duration_s": hours * HOUR, "reason": "INC-9 on call"}
        created = await self.api(self.requester, "POST", "/access/requests", body)
        first = await self.api(
            self.approvers[0], "POST", f"/access/requests/{created['id']}/approve", {}
        )
        assert first["status"] == "pending"
        second = await self.api(
            self.approvers[1], "POST", f"/access/requests/{created['id']}/approve", {}
        )
        assert second["status"] == "approved"
        return str(second["grant_id"])


async def answers(client: openai.AsyncOpenAI) -> str:
    reply = await client.chat.completions.create(model="oracle", messages=USER)
    content = reply.choices[0].message.content
    assert content
    return content


async def refused(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="oracle", messages=USER)
    assert caught.value.status_code == 404


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[Stage]:
    world = await start_world(tmp_path)
    clock = FakeClock()
    try:
        # The same world, served by a gateway on the test's clock.
        await world.gateway.stop()
        world.gateway = Gateway(world.settings, clock=clock)
        await world.gateway.start()
        requester = make_admin(world, "ivan", [], clearance=Level.CRITICAL)
        approvers = (
            make_admin(world, "appr-1", ["approver"]),
            make_admin(world, "appr-2", ["approver"]),
        )
        second_admin = make_admin(world, "sec-2", ["security-admin"])
        await world.reload()
        s = Stage(world, clock, requester, approvers)
        # A critical model, made through the admin API, forwarding like the seeded assistant.
        assistant = await s.api(world.admin_key, "GET", "/models/assistant")
        # (Two admins: one proposes, a second approves.)
        status, proposal = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/models",
            {
                "name": "oracle",
                "upstream_url": assistant["upstream_url"],
                "upstream_model": "mock-small",
                "api": "openai",
                "auth_style": "bearer",
                "upstream_key": UPSTREAM_KEY,
                "level": "critical",
            },
        )
        assert status == 202, proposal
        await s.api(second_admin, "POST", f"/changes/{proposal['pending']['id']}/approve", {})
        yield s
    finally:
        await stop_world(world)


async def test_a_grant_opens_the_model_until_its_time_is_up(stage: Stage) -> None:
    async with stage.client() as client:
        await refused(client)
        listed = {m.id async for m in client.models.list()}
        assert "oracle" not in listed

        await stage.granted(hours=2)
        assert await answers(client)
        listed = {m.id async for m in client.models.list()}
        assert "oracle" in listed

        # still inside the window, by the gateway's clock
        stage.clock.advance(2 * HOUR - 1)
        assert await answers(client)
        # the window is [start, start + 2 h): at its end the model is gone again
        stage.clock.advance(1)
        await refused(client)
        stage.clock.advance(HOUR)
        await refused(client)

    await stage.world.settle()
    denials = stage.world.events("request.denied")
    assert [e["data"]["reasons"] for e in denials if e["model"] == "oracle"] == [
        ["grant.required"],
        ["grant.required"],
        ["grant.required"],
    ]
    allowed = [e for e in stage.world.events("request.allowed") if e["model"] == "oracle"]
    assert len(allowed) == 2
    (grant,) = await stage.api(stage.requester, "GET", "/access/grants")
    assert grant["state"] == "expired"


async def test_a_revoked_grant_closes_the_model_at_once(stage: Stage) -> None:
    async with stage.client() as client:
        grant_id = await stage.granted(hours=8)
        assert await answers(client)
        await stage.api(
            stage.approvers[0], "POST", f"/access/grants/{grant_id}/revoke", {"reason": "done"}
        )
        await refused(client)  # no clock movement needed
        # and a fresh request with fresh approvals opens it again
        await stage.granted(hours=1)
        assert await answers(client)


async def test_a_request_nobody_decides_lapses_on_the_gateways_clock(stage: Stage) -> None:
    body = {"model": "oracle", "duration_s": HOUR, "reason": "INC-9 on call"}
    created = await stage.api(stage.requester, "POST", "/access/requests", body)
    await stage.api(stage.approvers[0], "POST", f"/access/requests/{created['id']}/approve", {})
    stage.clock.advance(HOUR)  # the request's time to live
    late = await stage.api(
        stage.approvers[1], "POST", f"/access/requests/{created['id']}/approve", {}
    )
    assert late == {"id": created["id"], "status": "expired"}
    async with stage.client() as client:
        await refused(client)
    (row,) = await stage.api(stage.requester, "GET", "/access/requests")
    assert row["status"] == "expired"


async def test_a_grant_live_on_the_gateways_clock_counts_whatever_the_wall_clock(
    stage: Stage,
) -> None:
    """The gateway decides with its own clock: a grant live by that clock opens the model
    even when the clock runs behind the wall clock (a replay, a test)."""
    stage.clock.set(time.time() - 24 * HOUR)
    await stage.granted(hours=2)
    (grant,) = await stage.api(stage.requester, "GET", "/access/grants")
    assert grant["state"] == "active"  # by the gateway's clock
    async with stage.client() as client:
        assert await answers(client)
