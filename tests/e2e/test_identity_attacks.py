"""Red-team regressions on sign-in, tokens and step-up, through a running gateway's HTTP API.

The provider is an in-process OpenID provider on loopback (discovery + JWKS, ES256, as the
configuration example in docs/identity.md allows): the test mints the ID tokens it would
issue, so each attack is exact. Set-up goes through the admin API (people, invitations,
approvals); only limits are shrunk in-process, as other tests do, to reach them quickly.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey

from garrison.admin.session_api import (
    ID_TOKEN_REPLAY_MAX,
    ID_TOKEN_REPLAY_PER_VENDOR_MAX,
    SIGNIN_ATTEMPTS_PER_SOURCE,
    SIGNIN_KEY,
    TOKEN_PATH,
)
from garrison.identity.dpop import (
    DPOP_REPLAY_PER_OWNER_MAX,
    MemoryReplayCache,
    ReplayVerdict,
    generate_proof_key,
    make_proof,
    proof_key_thumbprint,
)
from garrison.identity.enroll_limits import ENROLL_ATTEMPTS_GLOBAL
from garrison.identity.oidc_config import OidcProvider, OidcSettings
from tests.support.admin import admin_call, lift_enroll_limits, make_admin
from tests.support.callers import approve_as_second_admin, session_call
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

CLIENT = "garrison-cli"
# The order of the P-256 group: (r, n - s) is a second valid ECDSA signature of the same input.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_machines = itertools.count(1)


def machine() -> str:
    """A loopback address of its own (the person's machine, not the inviting admin's)."""
    n = next(_machines)
    return f"127.9.{n // 250 % 250}.{n % 250 + 1}"


class LoopbackIdp:
    """Discovery and JWKS of one ES256 key; ``id_token`` signs what the provider would."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
        self.runner: web.AppRunner | None = None
        self.issuer = ""

    async def start(self) -> LoopbackIdp:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.issuer = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        public = self.key.as_dict(private=False)
        return web.json_response({"keys": [{**public, "kid": "k1", "use": "sig"}]})

    def id_token(self, sub: str, nonce: str, *, now: float | None = None, **claims: Any) -> str:
        now = int(time.time() if now is None else now)
        body = {
            "iss": self.issuer,
            "sub": sub,
            "aud": CLIENT,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            "amr": ["pwd", "otp"],
            "nonce": nonce,
            **claims,
        }
        return jwt.encode({"alg": "ES256", "kid": "k1"}, body, self.key)


def malleated(token: str) -> str:
    """The same ES256 token with its signature's ``s`` replaced by ``n - s``: another string
    that verifies under the same key (ECDSA signatures are malleable)."""
    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    other = r + (P256_N - s).to_bytes(32, "big")
    return ".".join([head, payload, base64.urlsafe_b64encode(other).rstrip(b"=").decode()])


@pytest.fixture
async def idp() -> AsyncIterator[LoopbackIdp]:
    provider = await LoopbackIdp().start()
    yield provider
    await provider.stop()


@pytest.fixture
async def vendor_idp() -> AsyncIterator[LoopbackIdp]:
    provider = await LoopbackIdp().start()
    yield provider
    await provider.stop()


@pytest.fixture
async def world(tmp_path: Path, idp: LoopbackIdp, vendor_idp: LoopbackIdp) -> AsyncIterator[World]:
    oidc = OidcSettings(
        (
            OidcProvider(issuer=idp.issuer, client_id=CLIENT, algorithms=("ES256",)),
            OidcProvider(
                issuer=vendor_idp.issuer,
                client_id=CLIENT,
                algorithms=("ES256",),
                vendor="other-vendor",
            ),
        )
    )
    w = await start_world(tmp_path, oidc=oidc)
    lift_enroll_limits(w)
    try:
        yield w
    finally:
        await stop_world(w)


async def invited(world: World, name: str) -> str:
    """A person made and invited through the admin API; their enrollment code."""
    status, created = await admin_call(
        world, world.admin_key, "POST", "/principals", {"name": name, "org": "internal"}
    )
    if status == 202:
        await approve_as_second_admin(world, created["pending"]["id"])
    else:
        assert status == 201, created
    await world.reload()
    status, invitation = await admin_call(
        world, world.admin_key, "POST", f"/principals/{name}/invite", {}
    )
    assert status == 201, invitation
    return str(invitation["enrollment_code"])


async def exchange(
    world: World,
    id_token: str,
    key: ECKey,
    *,
    code: str | None = None,
    address: str | None = None,
) -> tuple[int, Any]:
    tokens = world.gateway.state.tokens
    assert tokens is not None
    now = world.gateway.state.clock()
    proof = make_proof(key, method="POST", url=tokens.url_for(TOKEN_PATH), now=now)
    body: dict[str, Any] = {"id_token": id_token}
    if code is not None:
        body["enrollment_code"] = code
    connector = aiohttp.TCPConnector(local_addr=(address or machine(), 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(
            f"{world.base}{TOKEN_PATH}",
            data=orjson.dumps(body),
            headers={"dpop": proof, "content-type": "application/json"},
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def nonce_for(key: ECKey) -> str:
    return f"{proof_key_thumbprint(key)}.n{next(_machines)}"


async def signed_in(world: World, idp: LoopbackIdp, name: str, sub: str) -> tuple[str, ECKey]:
    """``name`` linked to ``sub`` and signed in: their access token and proof key."""
    code = await invited(world, name)
    key = generate_proof_key()
    status, body = await exchange(world, idp.id_token(sub, nonce_for(key)), key, code=code)
    assert status == 200, body
    return str(body["access_token"]), key


async def call_models(world: World, token: str, key: ECKey, proof_key: ECKey | None = None) -> int:
    url = f"{world.base}/v1/models"
    proof = make_proof(proof_key or key, method="GET", url=url, now=time.time(), access_token=token)
    headers = {"authorization": f"DPoP {token}", "dpop": proof}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


# ── replay of an ID token at the exchange ────────────────────────────────────────────────
async def test_an_id_token_is_exchanged_once_even_with_its_signature_malleated(
    world: World, idp: LoopbackIdp
) -> None:
    """ECDSA signatures are malleable: (r, n - s) verifies too. Remembering the token by
    the digest of its text let the same ID token be exchanged twice."""
    code = await invited(world, "mal")
    key = generate_proof_key()
    token = idp.id_token("mal-sub", nonce_for(key))
    status, body = await exchange(world, token, key, code=code)
    assert status == 200, body
    twin = malleated(token)
    assert twin != token
    status, body = await exchange(world, twin, key)
    assert status == 401, body
    await world.settle()
    refused = world.events("session.refused")
    assert refused[-1]["data"]["reasons"] == ["oidc.id_token_replayed"]
    assert len(world.events("session.started")) == 1


# ── the exchange's rate limit ─────────────────────────────────────────────────────────────
async def test_junk_from_a_few_addresses_does_not_shut_sign_in_for_everyone(
    world: World, idp: LoopbackIdp
) -> None:
    """The exchange counted every attempt, junk included, against one budget shared by
    everyone (100 in ten minutes): ten addresses sending ten junk bodies each shut sign-in
    for the whole organisation for ten minutes."""
    code = await invited(world, "victim")
    limiter = world.gateway.http.app[SIGNIN_KEY].limiter
    assert limiter.per_source == SIGNIN_ATTEMPTS_PER_SOURCE
    junk_key = generate_proof_key()
    # More junk in all than the old shared budget (ENROLL_ATTEMPTS_GLOBAL) took.
    for _ in range(ENROLL_ATTEMPTS_GLOBAL // SIGNIN_ATTEMPTS_PER_SOURCE + 1):
        attacker = machine()
        for _ in range(limiter.per_source):
            status, _ = await exchange(world, "x.y.z", junk_key, address=attacker)
            assert status == 401
        status, _ = await exchange(world, "x.y.z", junk_key, address=attacker)
        assert status == 429  # each attacker's own address is stopped
    key = generate_proof_key()
    status, body = await exchange(world, idp.id_token("victim-sub", nonce_for(key)), key, code=code)
    assert status == 200, body


# ── step-up: a key instead of a session ───────────────────────────────────────────────────
async def test_with_sign_in_configured_a_key_cannot_approve_without_mfa(world: World) -> None:
    """Step-up was checked only for sessions: with OIDC configured, an approver's key (a
    file, one factor; stolen, it is everything) approved two-person changes with no MFA."""
    approver_key = make_admin(world, "approver-k", ["security-admin"])
    await world.reload()
    status, created = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": "p-key-approve", "org": "internal", "roles": ["auditor"]},
    )
    assert status == 202, created
    change = created["pending"]["id"]
    status, body = await admin_call(world, approver_key, "POST", f"/changes/{change}/approve", {})
    assert status == 403, body
    assert body["error"]["type"] == "step_up_required"
    await world.settle()
    assert world.events("admin.denied")[-1]["data"]["reasons"] == ["mfa.step_up_required"]
    status, pending = await admin_call(world, world.admin_key, "GET", "/changes")
    assert any(c["id"] == change for c in pending), pending


async def test_with_sign_in_configured_a_key_cannot_lift_a_lock_without_mfa(
    world: World,
) -> None:
    """The same for lifting containment: a stolen admin key must not undo a lock."""
    status, lock = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "principal", "target": "carol", "reason": "investigation"},
    )
    assert status == 201, lock
    await world.reload()
    path = f"/locks/{lock['id']}/lift"
    status, body = await admin_call(world, world.admin_key, "POST", path, {"reason": "x"})
    assert status == 403, body
    assert body["error"]["type"] == "step_up_required"
    status, body = await session_call(world, "admin", "POST", path, {"reason": "cleared"})
    assert status == 200, body


# ── the proofs' replay cache ──────────────────────────────────────────────────────────────
async def test_a_copied_token_cannot_fill_the_replay_cache_for_everyone(
    world: World, idp: LoopbackIdp
) -> None:
    """Proofs took their place in the per-process jti cache before the binding was checked:
    whoever held a copy of any token (not its key) filled the cache with proofs from a key of
    their own, and every token call of every person was refused (fail closed)."""
    tokens = world.gateway.state.tokens
    assert tokens is not None
    world.gateway.state.tokens = replace(tokens, replay=MemoryReplayCache(20))
    stolen, _ = await signed_in(world, idp, "leaky", "leaky-sub")
    thief = generate_proof_key()
    for _ in range(25):
        assert await call_models(world, stolen, thief) == 401
    token, key = await signed_in(world, idp, "bystander", "bystander-sub")
    assert await call_models(world, token, key) == 200
    await world.settle()
    reasons = [e["data"]["reasons"] for e in world.events("request.denied")]
    assert ["dpop.key_mismatch"] in reasons and ["dpop.replay_cache_full"] not in reasons


async def test_one_person_filling_their_share_of_the_replay_cache_refuses_only_them(
    world: World, idp: LoopbackIdp
) -> None:
    """A person's own valid calls fill at most their share (DPOP_REPLAY_PER_OWNER_MAX);
    past it they alone are refused, not every token caller of the process."""
    tokens = world.gateway.state.tokens
    assert tokens is not None
    world.gateway.state.tokens = replace(
        tokens, replay=MemoryReplayCache(max_entries=30, per_owner=10)
    )
    token, key = await signed_in(world, idp, "heavy", "heavy-sub")
    statuses = [await call_models(world, token, key) for _ in range(12)]
    assert statuses[:9] == [200] * 9 and statuses[-1] == 401
    other, other_key = await signed_in(world, idp, "bystander2", "bystander2-sub")
    assert await call_models(world, other, other_key) == 200
    await world.settle()
    reasons = [e["data"]["reasons"] for e in world.events("request.denied")]
    assert ["dpop.replay_cache_full"] in reasons


def test_the_replay_cache_holds_its_limit_per_owner() -> None:
    cache = MemoryReplayCache(max_entries=100, per_owner=DPOP_REPLAY_PER_OWNER_MAX // 1000)
    per = cache.per_owner
    verdicts = [cache.first_use(f"a{i}", expires_at=60, now=0, owner="a") for i in range(per + 1)]
    assert verdicts[-1] is ReplayVerdict.FULL and ReplayVerdict.FULL not in verdicts[:-1]
    assert cache.first_use("b0", expires_at=60, now=0, owner="b") is ReplayVerdict.NEW
    # The owner's entries expire with their proofs: the share is free again.
    assert cache.first_use("a-late", expires_at=200, now=61, owner="a") is ReplayVerdict.NEW


# ── the verified-token cache: a token that should stop working (these held) ───────────────
async def test_a_cached_token_stops_at_once_when_its_person_is_disabled(
    world: World, idp: LoopbackIdp
) -> None:
    token, key = await signed_in(world, idp, "leaver", "leaver-sub")
    assert await call_models(world, token, key) == 200  # now in VerifiedTokens
    status, body = await admin_call(
        world, world.admin_key, "PATCH", "/principals/leaver", {"status": "disabled"}
    )
    assert status == 200, body
    await world.reload()
    assert await call_models(world, token, key) == 401
    await world.settle()
    assert world.events("request.denied")[-1]["data"]["reasons"] == ["principal.inactive"]


async def test_a_cached_token_stops_at_once_when_the_vendor_is_suspended(
    world: World, idp: LoopbackIdp
) -> None:
    """The organisation's provider may speak for a vendor without a provider of its own."""
    status, invitation = await admin_call(
        world, world.admin_key, "POST", "/principals/bob/invite", {}
    )
    assert status == 201, invitation
    key = generate_proof_key()
    token_id = idp.id_token("bob-sub", nonce_for(key))
    status, body = await exchange(world, token_id, key, code=str(invitation["enrollment_code"]))
    assert status == 200, body
    token = str(body["access_token"])
    assert await call_models(world, token, key) == 200
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/vendors/contractor-co/status",
        {"status": "suspended", "reason": "breach"},
    )
    assert status in (200, 202), body
    await world.reload()
    assert await call_models(world, token, key) == 401
    await world.settle()
    assert world.events("request.denied")[-1]["data"]["reasons"] == ["vendor.inactive"]


async def test_a_lock_on_the_person_refuses_the_cached_token(
    world: World, idp: LoopbackIdp
) -> None:
    token, key = await signed_in(world, idp, "suspect", "suspect-sub")
    assert await call_models(world, token, key) == 200
    status, lock = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "principal", "target": "suspect", "reason": "investigation"},
    )
    assert status == 201, lock
    await world.reload()
    assert await call_models(world, token, key) == 403


async def test_a_garrison_token_is_not_a_bearer_key_and_an_id_token_is_not_a_token(
    world: World, idp: LoopbackIdp
) -> None:
    token, key = await signed_in(world, idp, "mixer", "mixer-sub")
    url = f"{world.base}/v1/models"
    id_token = idp.id_token("mixer-sub", nonce_for(key))
    attempts = [
        {"authorization": f"Bearer {token}"},  # downgraded to a bearer token
        {"x-api-key": token},
        {  # the provider's ID token where Garrison's token goes
            "authorization": f"DPoP {id_token}",
            "dpop": make_proof(key, method="GET", url=url, now=time.time(), access_token=id_token),
        },
        {  # a proof made for the admin API, on the data plane
            "authorization": f"DPoP {token}",
            "dpop": make_proof(
                key,
                method="GET",
                url=f"{world.base}/admin/v1/whoami",
                now=time.time(),
                access_token=token,
            ),
        },
        {  # a proof for the same path with an encoded slash and a double slash
            "authorization": f"DPoP {token}",
            "dpop": make_proof(
                key,
                method="GET",
                url=f"{world.base}/v1%2Fmodels",
                now=time.time(),
                access_token=token,
            ),
        },
    ]
    async with aiohttp.ClientSession() as http:
        for headers in attempts:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 401, headers


# ── the ID-token replay cache ─────────────────────────────────────────────────────────────
async def test_id_tokens_with_a_far_expiry_do_not_hold_the_replay_cache_for_years(
    world: World, idp: LoopbackIdp
) -> None:
    """An ID token is accepted at most ID_TOKEN_MAX_AGE_S after its iat, but was remembered
    until its own exp: a provider's tokens with exp ten years out (a vendor's provider, an
    account at any configured provider, linked or not) filled the cache for good, and then
    every sign-in of everyone was refused (fail closed)."""
    signin = world.gateway.http.app[SIGNIN_KEY]
    signin.seen = MemoryReplayCache(3)
    far = {"exp": int(time.time()) + 10 * 365 * 86400}
    for n in range(3):
        key = generate_proof_key()
        status, body = await exchange(
            world, idp.id_token(f"nobody-{n}", nonce_for(key), **far), key
        )
        assert status == 403, body  # not linked, but remembered
    code = await invited(world, "later")
    # Half an hour on: every one of those tokens is long past its age limit.
    world.gateway.state.clock = lambda: time.time() + 1800
    key = generate_proof_key()
    late = idp.id_token("later-sub", nonce_for(key), now=world.gateway.state.clock())
    status, body = await exchange(world, late, key, code=code)
    assert status == 200, body


async def test_a_vendors_provider_cannot_fill_the_id_token_cache_for_everyone(
    world: World, idp: LoopbackIdp, vendor_idp: LoopbackIdp
) -> None:
    """A vendor's provider (the vendor's to run) mints as many valid ID tokens as it likes;
    they hold at most ID_TOKEN_REPLAY_PER_VENDOR_MAX places, the organisation's sign-ins the
    rest."""
    signin = world.gateway.http.app[SIGNIN_KEY]
    signin.seen = MemoryReplayCache(5, per_owner=3)
    for n in range(5):
        key = generate_proof_key()
        token = vendor_idp.id_token(f"v-{n}", nonce_for(key))
        status, body = await exchange(world, token, key)
        assert status in (401, 403), body
    await world.settle()
    reasons = [e["data"]["reasons"] for e in world.events("session.refused")]
    assert reasons.count(["oidc.id_token_replayed"]) == 2  # refused past its share
    token, key = await signed_in(world, idp, "insider", "insider-sub")
    assert await call_models(world, token, key) == 200
    assert signin.seen.per_owner == 3 and ID_TOKEN_REPLAY_PER_VENDOR_MAX < ID_TOKEN_REPLAY_MAX


# ── step-up: an auth_time in the future ───────────────────────────────────────────────────
async def test_an_auth_time_in_the_future_is_refused_not_fresh_for_ever(
    world: World, idp: LoopbackIdp
) -> None:
    """Step-up counts MFA as fresh while now - auth_time <= MFA_FRESH_S: an ID token whose
    auth_time was a day ahead made its session count as freshly authenticated for its whole
    life. The exchange now refuses an auth_time beyond the skew, like iat."""
    code = await invited(world, "future")
    key = generate_proof_key()
    token = idp.id_token("future-sub", nonce_for(key), auth_time=int(time.time()) + 86400)
    status, body = await exchange(world, token, key, code=code)
    assert status == 401, body
    await world.settle()
    refused = world.events("session.refused")[-1]["data"]
    assert refused["reasons"] == ["oidc.id_token_invalid"]
    assert refused["detail"] == "claim_auth_time"
