"""Live calls are decided again on every snapshot swap: a change made through the admin API
that a new call would be refused for (a clearance lowered, a model's level raised or a
compartment added, a principal disabled) cuts the running stream, with an error event in the
API's own shape and the decision's reason code in the audit record. A change that leaves the
call allowed does not touch it.
A live call whose key expires mid-stream is cut too (``credential.expired``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.gateway.containment import cut_covered
from tests.support.admin import admin_call, make_admin
from tests.support.world import UPSTREAM_KEY, SkewedClock, World, start_world, stop_world

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]
# A cut must reach the client within this (the admin write reloads the snapshot before it
# answers; a loose functional bound, not a benchmark).
CUT_WITHIN_S = 1.0
# Guards every wait so a broken cut fails the test instead of hanging it.
GUARD_S = 10.0
# A stream that does not end by itself lasts at least this long in the tests below.
NOT_CUT_S = 0.5
# The life of the key that expires mid-stream (its end brought by moving the gateway's clock).
KEY_LIFE_S = 3600.0


def slow_model(world: World, name: str, api: UpstreamApi, level: Level, comps: list[str]) -> None:
    """A model whose upstream streams without end (set-up, written directly)."""
    world.directory.create_model(
        name,
        upstream_model="slow-stream",
        api=api,
        level=level,
        compartments=comps,
        upstream_url=f"http://127.0.0.1:{world.mock.port}/v1",
        auth_style=AuthStyle.X_API_KEY if api is UpstreamApi.ANTHROPIC else AuthStyle.BEARER,
        upstream_key=UPSTREAM_KEY,
        now=time.time(),
    )


@pytest.fixture
async def models(world: World) -> None:
    slow_model(world, "cyber-slow", UpstreamApi.OPENAI, Level.RESTRICTED, ["cyber"])
    slow_model(world, "claude-slow", UpstreamApi.ANTHROPIC, Level.INTERNAL, [])
    slow_model(world, "other-slow", UpstreamApi.OPENAI, Level.INTERNAL, [])
    await world.reload()


@contextlib.asynccontextmanager
async def stream(
    world: World, key: str, model: str, *, anthropic_api: bool = False
) -> AsyncIterator[aiohttp.ClientResponse]:
    if anthropic_api:
        path = "/v1/messages"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        body: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": USER}
    else:
        path = "/v1/chat/completions"
        headers = {"authorization": f"Bearer {key}"}
        body = {"model": model, "messages": USER}
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.base + path, json={**body, "stream": True}, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.read()
        first = b""
        async with asyncio.timeout(GUARD_S):
            while first.count(b"\n\n") < 2:
                first += await resp.content.readany()
        yield resp


async def rest_of(resp: aiohttp.ClientResponse) -> tuple[bytes, float]:
    start = time.monotonic()
    async with asyncio.timeout(GUARD_S):
        rest = await resp.read()
    return rest, time.monotonic() - start


async def completed(world: World, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        await world.settle()
        found = [e for e in world.events("request.completed") if e["request_id"] == request_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    pytest.fail(f"no request.completed for {request_id}")


async def change(world: World, path: str, body: dict[str, Any]) -> None:
    status, answer = await admin_call(world, world.admin_key, "PATCH", path, body)
    assert status == 200, answer


CASES = [
    # (who, model, the change through the admin API, the reason the new snapshot refuses)
    ("alice", "cyber-slow", ("/principals/alice", {"clearance": "internal"}), "clearance.level"),
    ("alice", "cyber-slow", ("/principals/alice", {"compartments": []}), "clearance.compartment"),
    ("carol", "other-slow", ("/models/other-slow", {"level": "restricted"}), "clearance.level"),
    (
        "carol",
        "other-slow",
        ("/models/other-slow", {"compartments": ["cyber"]}),
        "clearance.compartment",
    ),
    ("carol", "other-slow", ("/principals/carol", {"status": "disabled"}), "principal.inactive"),
]


@pytest.mark.parametrize(
    ("who", "model", "what", "reason"),
    CASES,
    ids=[
        "clearance-lowered",
        "compartment-removed",
        "model-level-raised",
        "model-compartment-added",
        "principal-disabled",
    ],
)
@pytest.mark.usefixtures("models")
async def test_a_change_the_new_snapshot_refuses_cuts_the_stream(
    world: World, who: str, model: str, what: tuple[str, dict[str, Any]], reason: str
) -> None:
    async with stream(world, world.keys[who], model) as resp:
        request_id = resp.headers["x-request-id"]
        await change(world, *what)
        rest, took = await rest_of(resp)
    assert took < CUT_WITHIN_S
    last = rest.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    error = orjson.loads(last.removeprefix(b"data: "))
    assert error["error"]["code"] == "forbidden"
    assert error["error"]["message"] == "This request is not permitted."
    assert b"[DONE]" not in rest
    done = await completed(world, request_id)
    assert (done["data"]["outcome"], done["data"]["status"]) == ("cut", 403)
    assert done["data"]["reasons"] == [reason]
    # A new call is refused for the same reason (the same standing rules).
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": model, "messages": USER},
            headers={"authorization": f"Bearer {world.keys[who]}"},
        ) as again,
    ):
        assert again.status in (401, 404)


@pytest.mark.usefixtures("models")
async def test_anthropic_stream_ends_with_an_anthropic_error_event(world: World) -> None:
    async with stream(world, world.keys["carol"], "claude-slow", anthropic_api=True) as resp:
        request_id = resp.headers["x-request-id"]
        await change(world, "/models/claude-slow", {"level": "restricted"})
        rest, took = await rest_of(resp)
    assert took < CUT_WITHIN_S
    head, _, data = rest.rstrip(b"\n").rsplit(b"\n\n", 1)[-1].partition(b"\n")
    assert head == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: ")) == {
        "type": "error",
        "error": {"type": "permission_error", "message": "This request is not permitted."},
    }
    done = await completed(world, request_id)
    assert done["data"]["reasons"] == ["clearance.level"]


@pytest.mark.usefixtures("models")
async def test_a_change_that_still_allows_the_call_does_not_cut_it(world: World) -> None:
    async with stream(world, world.keys["carol"], "other-slow") as resp:
        # Another model raised, another person disabled: carol's call still stands.
        await change(world, "/models/claude-slow", {"level": "restricted"})
        await change(world, "/principals/bob", {"status": "disabled"})
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(NOT_CUT_S):
                await resp.content.read()
    assert world.gateway.state.refusals.get("clearance.level", 0) == 0


@pytest.mark.usefixtures("models")
async def test_watcher_ticks_do_not_redecide_between_swaps(world: World) -> None:
    # Only a swap re-decides (ticks re-check locks and standing): with nothing changed, a
    # forced re-decision finds nothing to cut either.
    async with stream(world, world.keys["carol"], "other-slow"):
        assert cut_covered(world.gateway.state, redecide=False) == 0
        assert cut_covered(world.gateway.state) == 0


async def test_revoking_the_grant_cuts_a_critical_stream(world: World) -> None:
    slow_model(world, "oracle-slow", UpstreamApi.OPENAI, Level.CRITICAL, [])
    ivan = make_admin(world, "ivan", [], clearance=Level.CRITICAL)
    approvers = [make_admin(world, f"appr-{i}", ["approver"]) for i in (1, 2)]
    await world.reload()  # the set-up above was written directly
    ask = {"model": "oracle-slow", "duration_s": 3600, "reason": "INC-7 on call"}
    status, created = await admin_call(world, ivan, "POST", "/access/requests", ask)
    assert status == 201, created
    for approver in approvers:
        status, decided = await admin_call(
            world, approver, "POST", f"/access/requests/{created['id']}/approve", {}
        )
        assert status == 200, decided
    grant_id = decided["grant_id"]
    async with stream(world, ivan, "oracle-slow") as resp:
        request_id = resp.headers["x-request-id"]
        status, body = await admin_call(
            world, world.admin_key, "POST", f"/access/grants/{grant_id}/revoke", {"reason": "x"}
        )
        assert status == 200, body
        rest, took = await rest_of(resp)
    assert took < CUT_WITHIN_S
    assert b'"code":"forbidden"' in rest
    done = await completed(world, request_id)
    assert (done["data"]["outcome"], done["data"]["reasons"]) == ("cut", ["grant.required"])


async def _chat(world: World, key: str, model: str, *, stream: bool = False) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    session = aiohttp.ClientSession()
    try:
        resp = await session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps(body),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
    except BaseException:
        await session.close()
        raise
    return session, resp


# ── a key expiring mid-stream ──────────────────────────────────────────────────────────────
@pytest.mark.e2e
async def test_a_stream_is_cut_when_its_key_expires(tmp_path: Path) -> None:
    # The key's end is brought to the stream on the gateway's clock (moved by the test), not
    # waited for: a 2.5 s key assumed making it, reloading and the stream's start took less.
    clock = SkewedClock()
    world = await start_world(tmp_path, clock=clock)
    try:
        await _cut_at_expiry(world, clock)
    finally:
        await stop_world(world)


async def _cut_at_expiry(world: World, clock: SkewedClock) -> None:
    created = world.directory.create_key("carol", now=time.time(), expires_in=KEY_LIFE_S)
    await world.reload()
    expires_at = created.expires_at
    assert expires_at is not None
    session, resp = await _chat(world, created.key.token.reveal(), "m-slow-stream", stream=True)
    async with session, resp:
        assert resp.status == 200, await resp.read()
        request_id = resp.headers["x-request-id"]
        first = b""
        async with asyncio.timeout(GUARD_S):
            while first.count(b"\n\n") < 2:
                first += await resp.content.readany()
        assert clock() < expires_at  # the answer began while the key was live
        assert b'"code":"forbidden"' not in first
        clock.ahead = expires_at - time.time()  # the key's end is now, on the gateway's clock
        moved = time.monotonic()
        async with asyncio.timeout(GUARD_S):
            rest = await resp.read()
        took = time.monotonic() - moved
    assert clock() >= expires_at
    assert took < 2.0  # the watcher re-checks live calls every tick (50 ms)
    assert b'"code":"forbidden"' in rest
    assert b"[DONE]" not in rest

    async def cut_recorded() -> list[dict[str, Any]]:
        await world.settle()
        return [e for e in world.events("request.completed") if e["request_id"] == request_id]

    async with asyncio.timeout(GUARD_S):
        while not (done := await cut_recorded()):
            await asyncio.sleep(0.05)
    (event,) = done
    assert event["data"]["outcome"] == "cut"
    assert event["data"]["status"] == 403
    assert event["data"]["reasons"] == ["credential.expired"]
    assert event["data"]["lock_id"] is None
    async with asyncio.timeout(GUARD_S):
        while request_id not in world.mock.cancelled_request_ids:
            await asyncio.sleep(0.02)


@pytest.mark.e2e
async def test_a_stream_on_a_key_that_does_not_expire_soon_is_not_cut(world: World) -> None:
    created = world.directory.create_key("carol", now=time.time(), expires_in=3600)
    await world.reload()
    session, resp = await _chat(world, created.key.token.reveal(), "m-slow-stream", stream=True)
    async with session, resp:
        assert resp.status == 200
        received = b""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            async with asyncio.timeout(GUARD_S):
                received += await resp.content.readany()
        assert b'"code":"forbidden"' not in received
        assert b"data: {" in received
