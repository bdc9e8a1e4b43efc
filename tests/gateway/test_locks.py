"""Locks on the running gateway, over HTTP on loopback: a covered call is refused (403, the
API's own error shape, audited with the lock's id) while uncovered ones go on; a covered call
in flight is cut (a final error event for a stream, a 403 for a call not yet answering) and
its upstream connection dropped; locks expire, survive a restart, bind the admin API (except
a global lockdown); and a process that cannot see the locks fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from garrison.domain import AuthStyle, Level, Status, UpstreamApi, VendorStatus
from garrison.domain.locks import LockKind
from garrison.gateway.limits import GatewayLimits
from garrison.gateway.state import StaleMode
from garrison.identity import parse_key
from garrison.server import Gateway
from tests.support.admin import admin_call, make_admin, own_key, table_counts
from tests.support.world import UPSTREAM_KEY, SkewedClock, World, world_on

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]
VENDOR = "contractor-co"
# A cut must reach the client within this (a loose functional bound, not a benchmark: the
# watcher polls every 50 ms).
CUT_WITHIN_S = 1.0
# Guards every wait so a broken cut fails the test instead of hanging it.
GUARD_S = 10.0
# The TTL of the lock that ends by itself (on the gateway's clock, which the test moves).
SHORT_TTL_S = 60.0
# Seeded upstream models (see tests/support/world.py): a never-ending stream and a call that
# never answers.
SLOW_STREAM = "m-slow-stream"
HANG = "m-hang"


# ── calling ──────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    request_id: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


async def chat(
    world: World,
    key: str,
    model: str = "assistant",
    *,
    local_addr: str | None = None,
) -> Reply:
    """One non-streamed OpenAI chat call."""
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0)) if local_addr else None
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": model, "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


async def post(world: World, key: str, path: str, body: dict[str, Any]) -> Reply:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + path, json=body, headers={"authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


async def message(world: World, key: str, model: str = "claude") -> Reply:
    """One non-streamed Anthropic messages call."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/messages",
            data=orjson.dumps({"model": model, "max_tokens": 16, "messages": USER}),
            headers={
                "x-api-key": key,
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
            },
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


async def list_models(world: World, key: str) -> Reply:
    async with (
        aiohttp.ClientSession() as session,
        session.get(world.base + "/v1/models", headers={"authorization": f"Bearer {key}"}) as r,
    ):
        return Reply(r.status, await r.read(), r.headers.get("x-request-id", ""))


def key_id(token: str) -> str:
    parsed = parse_key(token)
    assert parsed is not None
    return parsed.key_id


def principal_id(world: World, name: str) -> str:
    (p,) = [p for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    return p.id


def org_id(world: World, name: str) -> str:
    (o,) = [o for o in world.gateway.state.snapshot.orgs.values() if o.name == name]
    return o.id


async def lock(world: World, kind: LockKind, target: str, **kw: Any) -> str:
    """Place a lock in the directory (as the CLI would) and load it; returns its id."""
    created = world.directory.create_lock(kind, target, reason="test lock", now=time.time(), **kw)
    await world.reload()
    return str(created["id"])


async def lift(world: World, lock_id: str) -> None:
    world.directory.lift_lock(lock_id, reason="test over", now=time.time())
    await world.reload()


async def until(
    check: Callable[[], Awaitable[bool]], *, within: float = 5.0, what: str = "condition"
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took (fails past ``within``)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            pytest.fail(f"{what} did not hold within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def event_for(world: World, name: str, request_id: str) -> dict[str, Any]:
    """The one audit event ``name`` of this request (waits for the writer)."""

    async def found() -> bool:
        await world.settle()
        return any(e["request_id"] == request_id for e in world.events(name))

    await until(found, what=f"{name} for {request_id}")
    (event,) = [e for e in world.events(name) if e["request_id"] == request_id]
    return event


def assert_forbidden_openai(reply: Reply, *secrets: str) -> None:
    assert reply.status == 403, reply.body
    assert reply.json == {
        "error": {
            "message": "This request is not permitted.",
            "type": reply.json["error"]["type"],
            "param": None,
            "code": "forbidden",
        }
    }
    for secret in secrets:  # the lock's id and reason stay with the operator
        assert secret.encode() not in reply.body


async def assert_lock_denial(world: World, reply: Reply, lock_id: str) -> None:
    event = await event_for(world, "request.denied", reply.request_id)
    assert event["data"]["status"] == 403
    assert event["data"]["reasons"] == ["lock.active"]
    assert event["data"]["lock_id"] == lock_id


def upstream_saw(world: World, request_id: str) -> bool:
    return request_id in world.mock.seen_request_ids


# ── fixtures ─────────────────────────────────────────────────────────────────────────────
# Every lock test here runs on both databases (PostgreSQL's half is skipped, with the
# reason, where there is none): the same refusals, cuts and records.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with world_on(request.param, tmp_path) as w:
        yield w


@pytest.fixture(params=BACKENDS)
async def stale_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """A world whose gateway calls its lock view stale after 0.3 s without a directory read."""
    async with world_on(request.param, tmp_path, limits=GatewayLimits(lock_view_stale_s=0.3)) as w:
        yield w


@pytest.fixture(params=BACKENDS)
async def clocked_world(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[World, SkewedClock]]:
    """A world whose gateway reads a clock the test can move forward."""
    clock = SkewedClock()
    async with world_on(request.param, tmp_path, clock=clock) as w:
        yield w, clock


@pytest.fixture
async def claude_slow(world: World) -> str:
    """An Anthropic model whose upstream streams without end (the mock's slow-stream)."""
    world.directory.create_model(
        "claude-slow",
        upstream_model="slow-stream",
        api=UpstreamApi.ANTHROPIC,
        level=Level.INTERNAL,
        upstream_url=f"http://127.0.0.1:{world.mock.port}/v1",
        auth_style=AuthStyle.X_API_KEY,
        upstream_key=UPSTREAM_KEY,
        now=time.time(),
    )
    await world.reload()
    return "claude-slow"


# ── each kind of lock: covered calls refused, the others served ──────────────────────────
@dataclass(frozen=True)
class Probe:
    key: str  # a name in world.keys
    model: str = "assistant"
    local_addr: str | None = None

    async def __call__(self, world: World) -> Reply:
        return await chat(world, world.keys[self.key], self.model, local_addr=self.local_addr)


@dataclass(frozen=True)
class Case:
    kind: LockKind
    target: Callable[[World], str]
    covered: tuple[Probe, ...]
    uncovered: tuple[Probe, ...]


CASES = {
    "credential": Case(
        LockKind.CREDENTIAL,
        lambda w: key_id(w.keys["alice"]),
        covered=(Probe("alice"), Probe("alice", "cyber-model")),
        # alice's other key, and everyone else, go on.
        uncovered=(Probe("alice-2"), Probe("carol"), Probe("bob")),
    ),
    "principal": Case(
        LockKind.PRINCIPAL,
        lambda w: "alice",
        covered=(Probe("alice"), Probe("alice-2"), Probe("alice", "cyber-model")),
        uncovered=(Probe("carol"), Probe("bob")),
    ),
    "vendor": Case(
        LockKind.VENDOR,
        lambda w: VENDOR,
        covered=(Probe("bob"),),
        uncovered=(Probe("alice"), Probe("carol")),
    ),
    "internal-org": Case(
        LockKind.VENDOR,
        lambda w: "internal",
        covered=(Probe("alice"), Probe("carol"), Probe("alice-2")),
        uncovered=(Probe("bob"),),
    ),
    "model": Case(
        LockKind.MODEL,
        lambda w: "assistant",
        covered=(Probe("alice"), Probe("bob"), Probe("carol")),
        uncovered=(Probe("alice", "cyber-model"),),
    ),
    "network": Case(
        LockKind.NETWORK,
        lambda w: "127.0.0.2/32",
        covered=(
            Probe("alice", local_addr="127.0.0.2"),
            Probe("bob-netbound", local_addr="127.0.0.2"),
        ),
        uncovered=(Probe("alice", local_addr="127.0.0.1"), Probe("bob")),
    ),
    "network-wide": Case(
        LockKind.NETWORK,
        lambda w: "127.0.0.0/8",
        covered=(Probe("alice"), Probe("bob"), Probe("carol", local_addr="127.0.0.2")),
        uncovered=(),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_lock_refuses_covered_calls_and_serves_the_rest(world: World, case: Case) -> None:
    world.keys["alice-2"] = world.directory.create_key("alice", now=time.time()).key.token.reveal()
    await world.reload()
    for probe in (*case.covered, *case.uncovered):
        assert (await probe(world)).status == 200, probe

    lock_id = await lock(world, case.kind, case.target(world))
    seen = len(world.mock.seen)
    for probe in case.covered:
        reply = await probe(world)
        assert_forbidden_openai(reply, lock_id, "test lock")
        await assert_lock_denial(world, reply, lock_id)
    assert len(world.mock.seen) == seen  # nothing refused reached the upstream
    for probe in case.uncovered:
        reply = await probe(world)
        assert reply.status == 200, (probe, reply.body)

    await lift(world, lock_id)
    for probe in case.covered:
        assert (await probe(world)).status == 200, probe


async def test_refusal_comes_in_the_anthropic_shape_for_anthropic_calls(world: World) -> None:
    lock_id = await lock(world, LockKind.MODEL, "claude")
    reply = await message(world, world.keys["alice"])
    assert reply.status == 403
    assert reply.json == {
        "type": "error",
        "error": {"type": "permission_error", "message": "This request is not permitted."},
    }
    await assert_lock_denial(world, reply, lock_id)
    # The OpenAI-side models are untouched.
    assert (await chat(world, world.keys["alice"])).status == 200


async def test_model_lock_does_not_reveal_a_model_the_caller_cannot_see(world: World) -> None:
    """bob may not use cyber-model: locked or not, it answers 404 as if it did not exist."""
    before = await chat(world, world.keys["bob"], "cyber-model")
    assert before.status == 404
    await lock(world, LockKind.MODEL, "cyber-model")
    after = await chat(world, world.keys["bob"], "cyber-model")
    assert (after.status, after.body) == (before.status, before.body)
    event = await event_for(world, "request.denied", after.request_id)
    assert "lock.active" not in event["data"]["reasons"]
    assert "lock_id" not in event["data"]
    # An unknown model stays 404 too (the lock check needs a resolved model).
    assert (await chat(world, world.keys["alice"], "no-such-model")).status == 404


async def test_models_list_omits_locked_models_and_refuses_locked_callers(world: World) -> None:
    def names(reply: Reply) -> set[str]:
        assert reply.status == 200, reply.body
        return {m["id"] for m in reply.json["data"]}

    before = names(await list_models(world, world.keys["alice"]))
    assert {"assistant", "cyber-model"} <= before
    carol_before = names(await list_models(world, world.keys["carol"]))
    model_lock = await lock(world, LockKind.MODEL, "assistant")
    assert names(await list_models(world, world.keys["alice"])) == before - {"assistant"}
    assert "assistant" not in names(await list_models(world, world.keys["bob"]))

    caller_lock = await lock(world, LockKind.PRINCIPAL, "alice")
    refused = await list_models(world, world.keys["alice"])
    assert_forbidden_openai(refused, caller_lock)
    await assert_lock_denial(world, refused, caller_lock)
    assert names(await list_models(world, world.keys["carol"])) == carol_before - {"assistant"}
    # Asked the Anthropic way, the refusal comes in the Anthropic shape.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            world.base + "/v1/models",
            headers={"x-api-key": world.keys["alice"], "anthropic-version": "2023-06-01"},
        ) as resp,
    ):
        assert resp.status == 403
        assert orjson.loads(await resp.read())["error"]["type"] == "permission_error"

    await lift(world, caller_lock)
    await lift(world, model_lock)
    assert names(await list_models(world, world.keys["alice"])) == before


# ── cutting calls in flight ──────────────────────────────────────────────────────────────
async def test_openai_stream_is_cut_when_its_vendor_is_locked(world: World) -> None:
    """bob streams through the real openai client; a vendor lock placed through the admin API
    ends the stream with an error the SDK raises, and the upstream connection is dropped."""
    client = openai.AsyncOpenAI(
        base_url=f"{world.base}/v1", api_key=world.keys["bob"], max_retries=0
    )
    text: list[str] = []
    lock_id = ""
    locked_at = 0.0
    async with client, asyncio.timeout(GUARD_S):
        stream = await client.chat.completions.create(
            model=SLOW_STREAM, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        request_id = stream.response.headers["x-request-id"]
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
                if len(text) == 3 and not lock_id:
                    status, body = await admin_call(
                        world,
                        world.admin_key,
                        "POST",
                        "/locks",
                        {"kind": "vendor", "target": VENDOR, "reason": "exfiltration"},
                    )
                    assert status == 201, body
                    lock_id = body["id"]
                    locked_at = time.monotonic()
        cut_after = time.monotonic() - locked_at
    assert len(text) >= 3  # the client saw the answer begin...
    assert lock_id
    error = raised.value  # ...then the error
    assert isinstance(error.body, dict)
    assert error.body["code"] == "forbidden"
    assert error.body["message"] == "This request is not permitted."
    assert "exfiltration" not in str(error.body) and lock_id not in str(error.body)
    assert cut_after < CUT_WITHIN_S

    await until(
        _async(lambda: request_id in world.mock.cancelled_request_ids),
        what="upstream request cancelled",
    )
    done = await event_for(world, "request.completed", request_id)
    assert done["data"]["outcome"] == "cut"
    assert done["data"]["status"] == 403
    assert done["data"]["reasons"] == ["lock.active"]
    assert done["data"]["lock_id"] == lock_id
    assert done["data"]["bytes_out"] > 0
    # And bob's next call is refused outright.
    assert (await chat(world, world.keys["bob"])).status == 403


async def test_anthropic_stream_is_cut_when_its_model_is_locked(
    world: World, claude_slow: str
) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=world.base, api_key=world.keys["alice"], max_retries=0
    )
    text: list[str] = []
    lock_id = ""
    async with client, asyncio.timeout(GUARD_S):
        with pytest.raises(anthropic.APIError) as raised:
            async with client.messages.stream(
                model=claude_slow, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                request_id = stream.response.headers["x-request-id"]
                async for piece in stream.text_stream:
                    text.append(piece)
                    if len(text) == 3 and not lock_id:
                        lock_id = await lock(world, LockKind.MODEL, claude_slow)
    assert len(text) >= 3
    assert lock_id
    body = raised.value.body
    assert body == {
        "type": "error",
        "error": {"type": "permission_error", "message": "This request is not permitted."},
    }
    await until(
        _async(lambda: request_id in world.mock.cancelled_request_ids),
        what="upstream request cancelled",
    )
    done = await event_for(world, "request.completed", request_id)
    assert (done["data"]["outcome"], done["data"]["status"]) == ("cut", 403)
    assert done["data"]["lock_id"] == lock_id
    # The other Anthropic model still answers.
    assert (await message(world, world.keys["alice"])).status == 200


@contextlib.asynccontextmanager
async def raw_stream(
    world: World, key: str, *, anthropic_api: bool = False, model: str = SLOW_STREAM
) -> AsyncIterator[tuple[aiohttp.ClientResponse, bytes]]:
    """A stream opened with plain aiohttp; yields the response and its first few events."""
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
            while first.count(b"\n\n") < 3:
                first += await resp.content.readany()
        yield resp, first


async def rest_of(resp: aiohttp.ClientResponse) -> tuple[bytes, float]:
    """Everything until the stream ends, and how long that took."""
    start = time.monotonic()
    async with asyncio.timeout(GUARD_S):
        rest = await resp.read()
    return rest, time.monotonic() - start


async def test_cut_reaches_the_client_within_a_second_without_an_explicit_reload(
    world: World,
) -> None:
    """The lock is only written to the directory; the gateway's watcher finds it and cuts."""
    async with raw_stream(world, world.keys["alice"]) as (resp, first):
        assert b"data: {" in first
        lock_id = world.directory.create_lock(
            LockKind.PRINCIPAL, "alice", reason="watcher", now=time.time()
        )["id"]
        rest, took = await rest_of(resp)
        request_id = resp.headers["x-request-id"]
    assert took < CUT_WITHIN_S
    last = rest.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"data: ")
    assert orjson.loads(last.removeprefix(b"data: ")) == {
        "error": {
            "message": "This request is not permitted.",
            "type": orjson.loads(last.removeprefix(b"data: "))["error"]["type"],
            "param": None,
            "code": "forbidden",
        }
    }
    assert b"[DONE]" not in rest
    done = await event_for(world, "request.completed", request_id)
    assert done["data"]["lock_id"] == lock_id


async def test_anthropic_raw_stream_ends_with_an_error_event(
    world: World, claude_slow: str
) -> None:
    async with raw_stream(world, world.keys["carol"], anthropic_api=True, model=claude_slow) as (
        resp,
        first,
    ):
        assert b"event: message_start" in first
        await lock(world, LockKind.VENDOR, "internal")
        rest, took = await rest_of(resp)
    assert took < CUT_WITHIN_S
    last = rest.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    head, _, data = last.partition(b"\n")
    assert head == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: ")) == {
        "type": "error",
        "error": {"type": "permission_error", "message": "This request is not permitted."},
    }
    assert b"message_stop" not in rest


async def hanging_call(world: World, key: str, *, stream: bool) -> Reply:
    """A call to the upstream that never answers (streamed or not)."""
    body = {"model": HANG, "messages": USER, "stream": stream}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_call_waiting_for_its_answer_gets_403_when_locked(world: World, stream: bool) -> None:
    task = asyncio.create_task(hanging_call(world, world.keys["alice"], stream=stream))
    try:
        await until(
            _async(lambda: any(b'"hang"' in s.body for s in world.mock.seen)),
            what="the upstream received the call",
        )
        (seen,) = [s for s in world.mock.seen if b'"hang"' in s.body]
        locked_at = time.monotonic()
        lock_id = await lock(world, LockKind.MODEL, HANG)
        async with asyncio.timeout(GUARD_S):
            reply = await task
        took = time.monotonic() - locked_at
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert took < CUT_WITHIN_S
    # Nothing was sent yet, so even a stream gets a plain 403 in the API's shape.
    assert_forbidden_openai(reply, lock_id)
    assert reply.request_id == seen.request_id
    await until(
        _async(lambda: seen.request_id in world.mock.cancelled_request_ids),
        what="upstream request cancelled",
    )
    done = await event_for(world, "request.completed", reply.request_id)
    assert done["data"]["outcome"] == "cut"
    assert done["data"]["status"] == 403
    assert done["data"]["reasons"] == ["lock.active"]
    assert done["data"]["lock_id"] == lock_id
    assert done["data"]["bytes_out"] == 0


async def test_call_still_sending_its_body_gets_403_when_locked(world: World) -> None:
    """Cut while the gateway reads the body: refused before anything was decided."""
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"model": "assistant", "messages": '
        await gate.wait()
        yield orjson.dumps(USER) + b"}"

    async def send() -> Reply:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                world.base + "/v1/chat/completions",
                data=slow_body(),
                headers={
                    "authorization": f"Bearer {world.keys['carol']}",
                    "content-type": "application/json",
                },
            ) as resp,
        ):
            return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))

    task = asyncio.create_task(send())
    try:
        await until(_async(lambda: bool(world.gateway.state.live)), what="the call is live")
        lock_id = await lock(world, LockKind.PRINCIPAL, "carol")
        async with asyncio.timeout(GUARD_S):
            reply = await task
    finally:
        gate.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert_forbidden_openai(reply, lock_id)
    await assert_lock_denial(world, reply, lock_id)
    assert not upstream_saw(world, reply.request_id)
    assert not world.gateway.state.live


async def test_uncovered_stream_is_not_cut(world: World) -> None:
    """A lock on someone else leaves a live stream running."""
    async with raw_stream(world, world.keys["alice"]) as (resp, _first):
        await lock(world, LockKind.PRINCIPAL, "carol")
        await lock(world, LockKind.MODEL, "assistant")
        more = b""
        async with asyncio.timeout(GUARD_S):
            while more.count(b"\n\n") < 10:
                chunk = await resp.content.readany()
                assert chunk, "the stream ended"
                more += chunk
        assert b'"error"' not in more
        request_id = resp.headers["x-request-id"]
    assert request_id not in [
        e["request_id"] for e in world.events("request.completed") if e["data"]["outcome"] == "cut"
    ]


Withdraw = Callable[[World], None]


def _revoke(world: World) -> None:
    world.directory.revoke_key(key_id(world.keys["bob"]), now=time.time(), reason="leaked")


def _disable(world: World) -> None:
    world.directory.set_principal_status("bob", Status.DISABLED, now=time.time())


def _suspend(world: World) -> None:
    world.directory.set_vendor_status(VENDOR, VendorStatus.SUSPENDED, now=time.time())


@pytest.mark.parametrize(
    ("withdraw", "reason"),
    [
        (_revoke, "credential.revoked_in_flight"),
        (_disable, "principal.inactive"),
        (_suspend, "vendor.inactive"),
    ],
    ids=["key-revoked", "principal-disabled", "vendor-suspended"],
)
async def test_withdrawn_standing_cuts_the_stream(
    world: World, withdraw: Withdraw, reason: str
) -> None:
    async with raw_stream(world, world.keys["bob"]) as (resp, _first):
        request_id = resp.headers["x-request-id"]
        withdraw(world)
        await world.reload()
        rest, took = await rest_of(resp)
    assert took < CUT_WITHIN_S
    assert b'"code":"forbidden"' in rest
    assert b"[DONE]" not in rest
    await until(
        _async(lambda: request_id in world.mock.cancelled_request_ids),
        what="upstream request cancelled",
    )
    done = await event_for(world, "request.completed", request_id)
    assert done["data"]["outcome"] == "cut"
    assert done["data"]["status"] == 403
    assert done["data"]["reasons"] == [reason]
    assert done["data"]["lock_id"] is None


async def test_openai_client_sees_the_stream_cut_when_its_key_is_revoked(world: World) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{world.base}/v1", api_key=world.keys["alice"], max_retries=0
    )
    chunks = 0
    async with client, asyncio.timeout(GUARD_S):
        stream = await client.chat.completions.create(
            model=SLOW_STREAM, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            async for _chunk in stream:
                chunks += 1
                if chunks == 2:
                    status, body = await admin_call(
                        world,
                        world.admin_key,
                        "POST",
                        f"/keys/{key_id(world.keys['alice'])}/revoke",
                        {"reason": "leaked"},
                    )
                    assert status == 200, body
    assert chunks >= 2
    assert isinstance(raised.value.body, dict) and raised.value.body["code"] == "forbidden"
    assert (await chat(world, world.keys["alice"])).status == 401


# ── time and restarts ────────────────────────────────────────────────────────────────────
async def test_lock_with_ttl_cuts_at_once_and_stops_covering_by_itself(
    clocked_world: tuple[World, SkewedClock],
) -> None:
    world, clock = clocked_world
    # Placed with a TTL, a lock cuts what it covers at once, like any other...
    async with raw_stream(world, world.keys["carol"]) as (resp, _first):
        await lock(world, LockKind.PRINCIPAL, "carol", ttl_s=SHORT_TTL_S * 100)
        rest, took = await rest_of(resp)
    assert took < CUT_WITHIN_S
    assert b'"code":"forbidden"' in rest

    # ...and ends by itself: its TTL passes on the gateway's clock (moved, not waited for:
    # a 0.5 s TTL assumed the lock's placement and the next call took less than that).
    lock_id = await lock(world, LockKind.PRINCIPAL, "alice", ttl_s=SHORT_TTL_S)
    refused = await chat(world, world.keys["alice"])
    assert refused.status == 403
    await assert_lock_denial(world, refused, lock_id)
    clock.ahead = SHORT_TTL_S + 1.0

    async def served() -> bool:
        return (await chat(world, world.keys["alice"])).status == 200

    await until(served, within=5.0, what="the TTL lock ended")
    # Nobody lifted it: it ended.
    status, body = await admin_call(world, world.admin_key, "GET", "/locks", params={"all": "1"})
    assert status == 200
    (row,) = [x for x in body if x["id"] == lock_id]
    assert row["state"] == "expired"
    assert row["lifted_at"] is None
    assert (await chat(world, world.keys["carol"])).status == 403  # the long one holds


async def test_locks_survive_a_gateway_restart(world: World) -> None:
    lock_id = await lock(world, LockKind.PRINCIPAL, "alice")
    await world.gateway.stop()
    settings = dataclasses.replace(world.settings, lock_stale_mode=StaleMode.ALL)
    world.gateway = Gateway(settings)
    await world.gateway.start()
    assert world.gateway.state.stale_mode is StaleMode.ALL  # [locks] stale_mode is honoured

    reply = await chat(world, world.keys["alice"])
    assert_forbidden_openai(reply, lock_id)
    await assert_lock_denial(world, reply, lock_id)
    assert (await chat(world, world.keys["carol"])).status == 200
    await lift(world, lock_id)
    assert (await chat(world, world.keys["alice"])).status == 200


# ── the admin API ────────────────────────────────────────────────────────────────────────
async def new_admin(world: World, name: str, roles: list[str], **kw: Any) -> str:
    key = make_admin(world, name, roles, **kw)
    await world.reload()
    return key


@pytest.mark.parametrize("kind", ["credential", "principal", "network"])
async def test_locked_admin_cannot_use_the_admin_api(world: World, kind: str) -> None:
    sec2 = await new_admin(world, "sec-2", ["security-admin"])
    target = {
        "credential": key_id(sec2),
        "principal": "sec-2",
        "network": "127.0.0.2/32",
    }[kind]
    status, created = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": kind, "target": target, "reason": "suspicious admin"},
    )
    assert status == 201, created
    lock_id = created["id"]
    addr = "127.0.0.2" if kind == "network" else None

    status, body = await admin_call(world, sec2, "GET", "/whoami", local_addr=addr)
    assert status == 403, body
    assert body["error"]["type"] == "forbidden"
    assert "locked" in body["error"]["message"]
    assert "suspicious admin" not in orjson.dumps(body).decode()  # the reason stays private
    before = table_counts(world)
    status, body = await admin_call(
        world, sec2, "POST", f"/locks/{lock_id}/lift", {"reason": "let me in"}, local_addr=addr
    )
    assert status == 403  # cannot lift their own lock either
    assert table_counts(world) == before

    await world.settle()
    denied = [e for e in world.events("admin.denied") if e["data"].get("lock_id") == lock_id]
    assert len(denied) == 2
    assert all(e["data"]["reasons"] == ["lock.active"] for e in denied)
    assert all(e["data"]["status"] == 403 for e in denied)
    # The first admin is not covered.
    assert (await admin_call(world, world.admin_key, "GET", "/whoami"))[0] == 200
    if kind == "network":  # sec-2 from another address is fine
        assert (await admin_call(world, sec2, "GET", "/whoami"))[0] == 200

    status, _ = await admin_call(
        world, world.admin_key, "POST", f"/locks/{lock_id}/lift", {"reason": "cleared"}
    )
    assert status == 200
    assert (await admin_call(world, sec2, "GET", "/whoami", local_addr=addr))[0] == 200


async def test_global_lockdown_refuses_model_calls_and_takes_two_admins_to_lift(
    world: World,
) -> None:
    sec2 = await new_admin(world, "sec-2", ["security-admin"])
    status, created = await admin_call(
        world, world.admin_key, "POST", "/locks", {"kind": "all", "target": "*", "reason": "IR-7"}
    )
    assert status == 201, created
    lock_id = created["id"]
    assert created["target"] == "*"

    for who, model in (("alice", "cyber-model"), ("bob", "assistant"), ("carol", "assistant")):
        reply = await chat(world, world.keys[who], model)
        assert_forbidden_openai(reply, lock_id, "IR-7")
        await assert_lock_denial(world, reply, lock_id)
    assert (await message(world, world.keys["alice"])).status == 403
    assert (await list_models(world, world.keys["alice"])).status == 403

    # The admin API stays open (admins must be able to lift it).
    status, listed = await admin_call(world, world.admin_key, "GET", "/locks")
    assert status == 200
    assert [(x["id"], x["state"]) for x in listed] == [(lock_id, "active")]

    status, first = await admin_call(
        world, world.admin_key, "POST", f"/locks/{lock_id}/lift", {"reason": "contained"}
    )
    assert status == 200, first
    assert first["status"] == "pending"
    assert (await chat(world, world.keys["alice"])).status == 403  # still locked

    status, again = await admin_call(
        world, world.admin_key, "POST", f"/locks/{lock_id}/lift", {"reason": "please"}
    )
    assert status == 409, again
    assert again["error"]["rule"] == "two-person"
    # Another key of the same admin is the same person.
    snap = world.gateway.state.snapshot
    admin_id = next(p.id for p in snap.principals.values() if p.name == "admin")
    admin_key_2 = own_key(world.directory, admin_id, now=time.time())
    await world.reload()
    status, again = await admin_call(
        world, admin_key_2, "POST", f"/locks/{lock_id}/lift", {"reason": "other key"}
    )
    assert status == 409, again
    assert again["error"]["rule"] == "two-person"
    assert (await chat(world, world.keys["alice"])).status == 403

    status, second = await admin_call(
        world, sec2, "POST", f"/locks/{lock_id}/lift", {"reason": "confirmed"}
    )
    assert status == 200, second
    assert second["status"] == "lifted"
    # Lifted by an admin write: enforced at once, no waiting for the watcher.
    assert (await chat(world, world.keys["alice"])).status == 200

    await world.settle()
    (requested,) = world.events("lock.lift_requested")
    (lifted,) = world.events("lock.lifted")
    assert requested["actor"] == principal_id(world, "admin")
    assert lifted["actor"] == principal_id(world, "sec-2")
    assert lifted["data"]["requested_by"] == principal_id(world, "admin")
    assert requested["data"]["origin"]["via"] == "admin-api"
    two_person = [e for e in world.events("admin.denied") if e["data"].get("rule") == "two-person"]
    assert len(two_person) == 2


async def test_global_lockdown_cuts_every_stream_and_refuses_every_endpoint(
    world: World,
) -> None:
    async with (
        raw_stream(world, world.keys["alice"]) as (a, _),
        raw_stream(world, world.keys["bob"]) as (b, _),
    ):
        lock_id = await lock(world, LockKind.ALL, "*")
        rest_a, _took = await rest_of(a)
        rest_b, _took = await rest_of(b)
    assert b'"code":"forbidden"' in rest_a
    assert b'"code":"forbidden"' in rest_b
    seen = len(world.mock.seen)
    for path, body in (
        ("/v1/completions", {"model": "assistant", "prompt": "once"}),
        ("/v1/embeddings", {"model": "assistant", "input": ["a"]}),
    ):
        reply = await post(world, world.keys["carol"], path, body)
        assert_forbidden_openai(reply, lock_id)
    assert len(world.mock.seen) == seen
    # Authentication still comes first: no key, no lock talk.
    assert (await chat(world, "gk_not-a-key")).status == 401


async def test_who_may_place_and_lift_locks(world: World) -> None:
    vm = await new_admin(world, "vm-co", ["vendor-manager"], org=VENDOR)
    auditor = await new_admin(world, "aud", ["auditor"])

    async def place(key: str, kind: str, target: str) -> tuple[int, Any]:
        return await admin_call(
            world, key, "POST", "/locks", {"kind": kind, "target": target, "reason": "r"}
        )

    before = table_counts(world)
    # Wide locks are a security-admin's.
    for kind, target in (("model", "assistant"), ("network", "10.0.0.0/8"), ("all", "*")):
        status, body = await place(vm, kind, target)
        assert status == 403, (kind, body)
    # Outside the vendor-manager's scope: as if it did not exist.
    assert (await place(vm, "principal", "alice"))[0] == 404
    assert (await place(vm, "vendor", "internal"))[0] == 404
    assert (await place(vm, "credential", key_id(world.keys["alice"])))[0] == 404
    # An auditor reads locks but places none.
    assert (await place(auditor, "principal", "bob"))[0] == 403
    assert table_counts(world) == before

    # Within scope: the vendor's keys, people and the vendor itself.
    status, key_lock = await place(vm, "credential", key_id(world.keys["bob"]))
    assert status == 201, key_lock
    status, person_lock = await place(vm, "principal", "bob")
    assert status == 201, person_lock
    assert (await chat(world, world.keys["bob"])).status == 403
    # Lifting is a security-admin's.
    status, _ = await admin_call(
        world, vm, "POST", f"/locks/{person_lock['id']}/lift", {"reason": "x"}
    )
    assert status == 403
    status, listed = await admin_call(world, auditor, "GET", "/locks")
    assert status == 200 and len(listed) == 2
    # A vendor-manager who locks their own vendor locks themselves out of the admin API too.
    status, vendor_lock = await place(vm, "vendor", VENDOR)
    assert status == 201, vendor_lock
    status, body = await admin_call(world, vm, "GET", "/whoami")
    assert status == 403, body


async def test_admin_lock_requests_are_validated_and_linked(world: World) -> None:
    before = table_counts(world)
    bad = [
        {"kind": "planet", "target": "earth", "reason": "r"},
        {"kind": "model", "target": "assistant", "reason": ""},
        {"kind": "model", "target": "assistant"},
        {"kind": "model", "target": "assistant", "reason": "r", "ttl_s": 0},
        {"kind": "model", "target": "assistant", "reason": "r", "ttl_s": -5},
        {"kind": "model", "target": "no-such-model", "reason": "r"},
        {"kind": "network", "target": "300.0.0.0/8", "reason": "r"},
    ]
    for body in bad:
        status, answer = await admin_call(world, world.admin_key, "POST", "/locks", body)
        assert status == 400, (body, answer)
    assert table_counts(world) == before

    status, first = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "model", "target": "assistant", "reason": "r"},
    )
    assert status == 201
    status, dup = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "model", "target": "assistant", "reason": "r"},
    )
    assert status == 409, dup
    status, missing = await admin_call(
        world, world.admin_key, "POST", "/locks/lck_0000000000000000/lift", {"reason": "r"}
    )
    assert status == 404, missing
    status, listed = await admin_call(world, world.admin_key, "GET", "/locks")
    assert [x["id"] for x in listed] == [first["id"]]

    # A lock may name the incident it belongs to (which must exist).
    status, answer = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "principal", "target": "bob", "reason": "IR", "incident": "inc_nope"},
    )
    assert status == 400, answer
    incident = world.directory.open_incident("token leak", now=time.time())
    status, created = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "principal", "target": "bob", "reason": "IR", "incident": incident},
    )
    assert status == 201, created
    assert created["incident_id"] == incident
    assert (await chat(world, world.keys["bob"])).status == 403


# ── a stale view of the locks ────────────────────────────────────────────────────────────
def cut_off(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process can no longer read its database's version (the watcher's probe fails)."""

    def fail() -> int:
        raise OSError("database unreachable")

    monkeypatch.setattr(world.gateway._probe, "version", fail)


async def wait_stale(world: World) -> None:
    state = world.gateway.state

    async def stale() -> bool:
        return time.monotonic() - state.lock_view_at > state.limits.lock_view_stale_s + 0.05

    await until(stale, what="the lock view went stale")


async def test_stale_lock_view_refuses_restricted_models_only(
    stale_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = stale_world
    assert world.gateway.state.stale_mode is StaleMode.RESTRICTED  # the default
    # Fresh: the watcher keeps the view young even with no writes at all.
    for _ in range(3):
        assert (await chat(world, world.keys["alice"], "cyber-model")).status == 200

    cut_off(world, monkeypatch)

    async def refused() -> bool:
        return (await chat(world, world.keys["alice"], "cyber-model")).status == 503

    await until(refused, within=5.0, what="restricted calls refused")
    reply = await chat(world, world.keys["alice"], "cyber-model")
    assert reply.status == 503
    assert reply.json["error"]["code"] == "overloaded"
    event = await event_for(world, "request.denied", reply.request_id)
    assert event["data"]["reasons"] == ["lock.view_stale"]
    assert not upstream_saw(world, reply.request_id)
    # Internal models still answer.
    assert (await chat(world, world.keys["alice"], "assistant")).status == 200
    assert (await chat(world, world.keys["bob"], "assistant")).status == 200
    assert (await message(world, world.keys["alice"])).status == 200

    monkeypatch.undo()  # the database is back

    async def served() -> bool:
        return (await chat(world, world.keys["alice"], "cyber-model")).status == 200

    await until(served, within=5.0, what="recovery")


async def test_stale_mode_all_refuses_every_call(
    stale_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = stale_world
    world.gateway.state.stale_mode = StaleMode.ALL
    assert (await chat(world, world.keys["alice"], "assistant")).status == 200
    cut_off(world, monkeypatch)
    await wait_stale(world)
    for who, model in (("alice", "assistant"), ("alice", "cyber-model"), ("bob", "assistant")):
        reply = await chat(world, world.keys[who], model)
        assert reply.status == 503, (who, model)
    event = await event_for(world, "request.denied", reply.request_id)
    assert event["data"]["reasons"] == ["lock.view_stale"]
    assert (await message(world, world.keys["alice"])).status == 503

    monkeypatch.undo()

    async def served() -> bool:
        return (await chat(world, world.keys["alice"], "assistant")).status == 200

    await until(served, within=5.0, what="recovery")


async def test_stale_mode_open_serves_everything(
    stale_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = stale_world
    cut_off(world, monkeypatch)

    async def refused() -> bool:
        return (await chat(world, world.keys["alice"], "cyber-model")).status == 503

    await until(refused, within=5.0, what="restricted calls refused")
    world.gateway.state.stale_mode = StaleMode.OPEN
    # Just as stale, but served: availability over containment.
    await wait_stale(world)
    assert (await chat(world, world.keys["alice"], "cyber-model")).status == 200
    assert (await chat(world, world.keys["alice"], "assistant")).status == 200


async def test_a_lock_is_enforced_even_when_the_view_is_stale(
    stale_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staleness adds refusals; it never lifts a lock the process already holds."""
    world = stale_world
    lock_id = await lock(world, LockKind.PRINCIPAL, "carol")
    cut_off(world, monkeypatch)
    world.gateway.state.stale_mode = StaleMode.OPEN
    await wait_stale(world)
    reply = await chat(world, world.keys["carol"])
    assert_forbidden_openai(reply, lock_id)


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def test_plain_call_waiting_for_its_answer_is_cut_by_a_lock(world: World) -> None:
    """A non-streamed call inside its deadline, waiting on an upstream that never answers,
    is cut when a lock covers its model: a 403, the upstream request dropped, recorded as
    cut (the call's deadline passes the cut's cancellation on, as asyncio's does)."""
    reply = asyncio.create_task(chat(world, world.keys["alice"], "m-hang"))
    await until(_async(lambda: bool(world.mock.seen_request_ids)), what="call forwarded")
    (request_id,) = world.mock.seen_request_ids
    lock_id = await lock(world, LockKind.MODEL, "m-hang")
    async with asyncio.timeout(GUARD_S):
        answered = await reply
    assert answered.status == 403
    assert answered.request_id == request_id
    assert orjson.loads(answered.body)["error"]["code"] == "forbidden"
    await until(
        _async(lambda: request_id in world.mock.cancelled_request_ids),
        what="upstream request cancelled",
    )
    done = await event_for(world, "request.completed", request_id)
    assert (done["data"]["outcome"], done["data"]["status"]) == ("cut", 403)
    assert done["data"]["lock_id"] == lock_id


async def test_a_lock_cuts_a_call_even_when_the_kept_loop_is_not_the_running_one(
    world: World,
) -> None:
    """The handler finds its task through the loop kept on the state (no getpid()); on a
    state whose kept loop is not the one serving it, it asks asyncio instead, so the call
    is still in the live set with its task and a lock still cuts it."""
    other = asyncio.new_event_loop()
    try:
        world.gateway.state.loop = other
        reply = asyncio.create_task(chat(world, world.keys["alice"], "m-hang"))
        await until(_async(lambda: bool(world.mock.seen_request_ids)), what="call forwarded")
        await lock(world, LockKind.MODEL, "m-hang")
        async with asyncio.timeout(GUARD_S):
            answered = await reply
        assert answered.status == 403
    finally:
        world.gateway.state.loop = asyncio.get_running_loop()
        other.close()
