"""Limits that hold over two gateway replicas sharing one Redis ([storage] redis_url) and one
database: calls in flight per key and per person, calls per minute, a DPoP proof replayed to
the other replica; and what callers meet while Redis is down, and after it returns."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.gateway.limits import GatewayLimits
from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.dpop import generate_proof_key, make_proof
from garrison.metrics import render
from garrison.server import Gateway
from garrison.shared.redis_limits import RedisLimits
from garrison.shared.redis_link import REDIS_RETRY_S
from tests.support.redis_server import (
    REDIS_URL,
    RedisProxy,
    closed_port,
    fresh_prefix,
    require,
)
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

PUBLIC_URL = "http://garrison.test"  # both replicas behind one name, as behind a balancer
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
# Longest the stalled uploads may take to be admitted (a Redis round trip each).
ADMITTED_WITHIN_S = 10.0
# The second replicas running in this test (``reasons`` waits for their logs too).
OTHERS: list[Gateway] = []


@dataclasses.dataclass
class Pair:
    world: World
    other: Gateway

    def gateway(self, which: int) -> Gateway:
        return self.world.gateway if which == 0 else self.other

    def base(self, which: int) -> str:
        return f"http://127.0.0.1:{self.gateway(which).port}"


Start = Callable[..., Awaitable[Pair]]


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Start]:
    """Two gateways on one database and one Redis prefix (``url``: where they find Redis)."""
    require()
    started: list[Pair] = []
    with fresh_prefix() as prefix:

        async def start(url: str = REDIS_URL, **limits: Any) -> Pair:
            world = await start_world(tmp_path / f"w{len(started)}")
            await world.gateway.stop()
            world.settings = dataclasses.replace(
                world.settings,
                redis_url=url,
                redis_prefix=prefix,
                public_url=PUBLIC_URL,
                limits=GatewayLimits(**limits),
            )
            world.gateway = Gateway(world.settings)
            await world.gateway.start()
            other = Gateway(world.settings)
            await other.start()
            OTHERS.append(other)
            pair = Pair(world, other)
            started.append(pair)
            return pair

        try:
            yield start
        finally:
            for pair in started:
                await pair.other.stop()
                await stop_world(pair.world)
            OTHERS.clear()


async def call(
    base: str, key: str, model: str = "assistant", headers: dict[str, str] | None = None
) -> tuple[int, bytes, Mapping[str, str]]:
    sent = {"authorization": f"Bearer {key}", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + CHAT, json={"model": model, "messages": USER}, headers=sent) as resp,
    ):
        return resp.status, await resp.read(), resp.headers.copy()


async def reasons(world: World, request_id: str) -> list[str]:
    """The reasons of a refusal by either replica (both write to the world's database)."""
    await world.settle()
    for gateway in list(OTHERS):
        await gateway.audit.integrate()
    (event,) = [e for e in world.events("request.denied") if e["request_id"] == request_id]
    return list(event["data"]["reasons"])


@contextlib.asynccontextmanager
async def stalled_uploads(gateway: Gateway, key: str, count: int) -> AsyncIterator[None]:
    """``count`` calls to ``gateway`` that send their head and one byte of the body, then
    stall (each holding its slots); entered once the gateway holds their shared leases."""
    port = gateway.port
    shared = gateway.state.shared
    assert isinstance(shared, RedisLimits)
    writers = []
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    ).encode()
    try:
        for _ in range(count):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            await writer.drain()
            writers.append(writer)
        # Admitted: past admission (their leases taken in Redis), waiting for the body. A
        # condition, not a 0.3 s pause, which a loaded machine could outlast.
        deadline = time.monotonic() + ADMITTED_WITHIN_S
        while shared.in_flight < count:
            assert time.monotonic() < deadline, f"{shared.in_flight} of {count} admitted"
            await asyncio.sleep(0.01)
        yield
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def until_status(base: str, key: str, status: int, within: float = 3.0) -> int:
    deadline = time.monotonic() + within
    seen, _, _ = await call(base, key)
    while seen != status and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        seen, _, _ = await call(base, key)
    return seen


async def test_a_keys_calls_in_flight_are_limited_over_both_replicas(replicas: Start) -> None:
    pair = await replicas(max_concurrent_per_credential=2, max_concurrent_per_principal=3)
    carol = pair.world.keys["carol"]
    async with stalled_uploads(pair.gateway(0), carol, 2):
        status, raw, headers = await call(pair.base(1), carol)
        assert status == 429 and orjson.loads(raw)["error"]["code"] == "rate_limited"
        assert await reasons(pair.world, headers["x-request-id"]) == ["credential.concurrency"]
    # The uploads ended: their slots are given back to every replica.
    assert await until_status(pair.base(1), carol, 200) == 200


async def test_a_persons_calls_in_flight_are_limited_over_their_keys_and_replicas(
    replicas: Start,
) -> None:
    pair = await replicas(max_concurrent_per_credential=2, max_concurrent_per_principal=3)
    world = pair.world
    second = world.directory.create_key("carol", now=time.time()).key.token.reveal()
    await world.reload()
    await pair.other.reload()
    carol = world.keys["carol"]
    async with (
        stalled_uploads(pair.gateway(0), carol, 2),
        stalled_uploads(pair.gateway(1), second, 1),
    ):
        # Replica 1 itself holds one of carol's calls: its own limits would let this in.
        status, _, headers = await call(pair.base(1), second)
        assert status == 429
        assert await reasons(world, headers["x-request-id"]) == ["principal.concurrency"]
        # Someone else is not affected.
        assert (await call(pair.base(1), world.keys["alice"]))[0] == 200


async def test_a_persons_calls_per_minute_are_counted_over_both_replicas(
    replicas: Start,
) -> None:
    pair = await replicas(max_calls_per_minute_per_principal=3)
    carol = pair.world.keys["carol"]
    statuses = [(await call(pair.base(n % 2), carol))[0] for n in range(3)]
    assert statuses == [200, 200, 200]
    status, _, headers = await call(pair.base(1), carol)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 20  # one call every 20 s at 3 a minute
    assert await reasons(pair.world, headers["x-request-id"]) == ["principal.rate"]
    assert (await call(pair.base(0), pair.world.keys["alice"]))[0] == 200


def bound_call_headers(
    world: World, name: str, method: str = "POST", path: str = CHAT, **more: Any
) -> dict[str, str]:
    """A DPoP-bound token for ``name`` and one proof for ``method`` ``path`` (at the public
    URL; a chat call by default)."""
    key = generate_proof_key()
    (principal,) = [
        p.id for p in world.gateway.state.snapshot.principals.values() if p.name == name
    ]
    now = time.time()
    claims = SessionClaims(
        principal_id=principal,
        session_id=f"s-{name}",
        jkt=key.thumbprint(),
        amr=("pwd", "otp"),
        acr=None,
        auth_time=now,
        idp_issuer="https://idp.example",
        idp_subject=f"{name}-sub",
        issued_at=now,
        expires_at=now + 600,
    )
    claims = dataclasses.replace(claims, **more)
    tokens = world.gateway.state.tokens
    assert tokens is not None
    token = issue_access_token(tokens.signer, claims)
    proof = make_proof(key, method=method, url=PUBLIC_URL + path, now=now, access_token=token)
    return {"authorization": f"DPoP {token}", "dpop": proof}


async def bound_call(base: str, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base + CHAT, json={"model": "assistant", "messages": USER}, headers=headers
        ) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers["x-request-id"]


async def test_a_proof_replayed_to_the_other_replica_is_refused(replicas: Start) -> None:
    pair = await replicas()
    headers = bound_call_headers(pair.world, "carol")
    assert (await bound_call(pair.base(0), headers))[0] == 200
    status, request_id = await bound_call(pair.base(1), headers)
    assert status == 401
    assert await reasons(pair.world, request_id) == ["dpop.replayed"]
    # And on the first replica itself (its own cache answers first).
    status, request_id = await bound_call(pair.base(0), headers)
    assert status == 401 and await reasons(pair.world, request_id) == ["dpop.replayed"]


async def test_an_admin_calls_proof_replayed_to_the_other_replica_is_refused(
    replicas: Start,
) -> None:
    pair = await replicas()
    whoami = "/admin/v1/whoami"
    headers = bound_call_headers(pair.world, "admin", "GET", whoami, roles=("security-admin",))
    statuses = []
    for which in (0, 1):
        async with (
            aiohttp.ClientSession() as session,
            session.get(pair.base(which) + whoami, headers=headers) as resp,
        ):
            await resp.read()
            statuses.append(resp.status)
            request_id = resp.headers["x-request-id"]
    assert statuses == [200, 401]
    await pair.world.settle()
    for gateway in OTHERS:
        await gateway.audit.integrate()
    denied = [e for e in pair.world.events("admin.denied") if e["request_id"] == request_id]
    assert [e["data"]["reasons"] for e in denied] == [["dpop.replayed"]]


async def test_redis_down_refuses_restricted_models_and_proofs_and_serves_the_rest(
    replicas: Start,
) -> None:
    pair = await replicas(f"redis://127.0.0.1:{closed_port()}/0")
    world = pair.world
    alice = world.keys["alice"]
    status, raw, headers = await call(pair.base(0), alice, "cyber-model")
    assert status == 503 and orjson.loads(raw)["error"]["code"] == "overloaded"
    assert await reasons(world, headers["x-request-id"]) == ["limits.shared_unavailable"]
    assert (await call(pair.base(0), alice, "assistant"))[0] == 200
    status, request_id = await bound_call(pair.base(1), bound_call_headers(world, "carol"))
    assert status == 503 and await reasons(world, request_id) == ["dpop.replay_unchecked"]
    metrics = render(world.gateway.state, None).decode()
    assert "garrison_shared_limits_up 0.0" in metrics
    assert "garrison_shared_limits_fallbacks_total 2.0" in metrics  # both calls above


async def test_redis_down_a_lower_level_falls_back_to_the_process_rate(
    replicas: Start,
) -> None:
    pair = await replicas(
        f"redis://127.0.0.1:{closed_port()}/0", max_calls_per_minute_per_principal=2
    )
    carol = pair.world.keys["carol"]
    statuses = [(await call(pair.base(0), carol))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    # The other replica counts its own (the limit is per process while Redis is down).
    assert (await call(pair.base(1), carol))[0] == 200


async def test_restricted_models_are_served_again_once_redis_returns(replicas: Start) -> None:
    proxy = RedisProxy()
    await proxy.up()
    try:
        pair = await replicas(proxy.url)
        alice = pair.world.keys["alice"]
        assert (await call(pair.base(0), alice, "cyber-model"))[0] == 200
        await proxy.down()
        assert (await call(pair.base(0), alice, "cyber-model"))[0] == 503
        await proxy.up()
        await asyncio.sleep(REDIS_RETRY_S + 0.1)
        assert (await call(pair.base(0), alice, "cyber-model"))[0] == 200
        assert pair.world.gateway.state.shared is not None
        assert pair.world.gateway.state.shared.up
    finally:
        await proxy.down()


# ── without Redis ──────────────────────────────────────────────────────────────────────────
async def test_without_redis_a_persons_calls_per_minute_are_limited_in_the_process(
    tmp_path: Path,
) -> None:
    world = await start_world(tmp_path, limits=GatewayLimits(max_calls_per_minute_per_principal=2))
    try:
        carol = world.keys["carol"]
        statuses = [(await call(world.base, carol))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await call(world.base, world.keys["alice"]))[0] == 200
    finally:
        await stop_world(world)


_PROBE = """
import sys
from pathlib import Path
from garrison.bootstrap import init
from garrison.server import Gateway
done = init(Path(sys.argv[1]))
Gateway(done.settings)
print("redis" in sys.modules)
"""


def test_the_embedded_default_never_imports_redis(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("GARRISON_REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
