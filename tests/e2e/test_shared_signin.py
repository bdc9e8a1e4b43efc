"""Sign-in on two replicas sharing one Redis: an ID token exchanged at one replica is
refused at the other, a sign-in proof is used once over both, and sign-in attempts from one
address are counted over both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from joserfc.jwk import ECKey

from garrison.admin.session_api import SIGNIN_ATTEMPTS_PER_SOURCE, TOKEN_PATH
from garrison.identity.dpop import generate_proof_key, make_proof
from garrison.identity.oidc_config import OidcProvider, OidcSettings
from garrison.server import Gateway
from tests.e2e.test_identity_attacks import CLIENT, LoopbackIdp, invited, machine, nonce_for
from tests.support.redis_server import REDIS_URL, fresh_prefix
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e


@dataclasses.dataclass
class Pair:
    world: World
    other: Gateway

    def base(self, which: int) -> str:
        return self.world.base if which == 0 else f"http://127.0.0.1:{self.other.port}"


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Pair, LoopbackIdp]]:
    idp = await LoopbackIdp().start()
    oidc = OidcSettings((OidcProvider(issuer=idp.issuer, client_id=CLIENT, algorithms=("ES256",)),))
    with fresh_prefix() as prefix:
        world = await start_world(tmp_path, oidc=oidc)
        await world.gateway.stop()
        world.settings = dataclasses.replace(
            world.settings,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            public_url="http://garrison.test",
        )
        world.gateway = Gateway(world.settings)
        await world.gateway.start()
        other = Gateway(world.settings)
        await other.start()
        try:
            yield Pair(world, other), idp
        finally:
            await other.stop()
            await stop_world(world)
            await idp.stop()


async def send(
    base: str, id_token: str, proof: str, *, code: str | None = None, address: str = ""
) -> tuple[int, Any, str]:
    body: dict[str, Any] = {"id_token": id_token}
    if code is not None:
        body["enrollment_code"] = code
    connector = aiohttp.TCPConnector(local_addr=(address or machine(), 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(
            base + TOKEN_PATH,
            data=orjson.dumps(body),
            headers={"dpop": proof, "content-type": "application/json"},
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read()), resp.headers["x-request-id"]


async def refusal(pair: Pair, request_id: str) -> list[str]:
    await pair.world.settle()
    await pair.other.audit.integrate()
    (event,) = [e for e in pair.world.events("session.refused") if e["request_id"] == request_id]
    return list(event["data"]["reasons"])


def fresh_proof(key: ECKey) -> str:
    return make_proof(key, method="POST", url="http://garrison.test" + TOKEN_PATH, now=time.time())


async def test_an_id_token_exchanged_at_one_replica_is_refused_at_the_other(
    pair: tuple[Pair, LoopbackIdp],
) -> None:
    replicas, idp = pair
    code = await invited(replicas.world, "dana")
    key = generate_proof_key()
    token = idp.id_token("dana-sub", nonce_for(key))
    status, body, _ = await send(replicas.base(0), token, fresh_proof(key), code=code)
    assert status == 200, body
    status, body, request_id = await send(replicas.base(1), token, fresh_proof(key))
    assert status == 401, body
    assert await refusal(replicas, request_id) == ["oidc.id_token_replayed"]


async def test_a_sign_in_proof_is_used_once_over_both_replicas(
    pair: tuple[Pair, LoopbackIdp],
) -> None:
    replicas, idp = pair
    code = await invited(replicas.world, "erin")
    key = generate_proof_key()
    proof = fresh_proof(key)
    status, body, _ = await send(
        replicas.base(0), idp.id_token("erin-sub", nonce_for(key)), proof, code=code
    )
    assert status == 200, body
    status, _, request_id = await send(
        replicas.base(1), idp.id_token("erin-sub", nonce_for(key)), proof
    )
    assert status == 401
    assert await refusal(replicas, request_id) == ["dpop.replayed"]


async def test_sign_in_attempts_from_one_address_are_counted_over_both_replicas(
    pair: tuple[Pair, LoopbackIdp],
) -> None:
    replicas, _ = pair
    address = machine()
    statuses = []
    for n in range(SIGNIN_ATTEMPTS_PER_SOURCE + 1):
        status, _, _ = await send(
            replicas.base(n % 2), "junk", fresh_proof(generate_proof_key()), address=address
        )
        statuses.append(status)
    assert 429 not in statuses[:SIGNIN_ATTEMPTS_PER_SOURCE]
    assert statuses[-1] == 429
