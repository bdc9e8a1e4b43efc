"""DPoP-bound sign-in tokens on the running gateway and admin API: what is taken, what is
refused (401, audited with the reason code), and what the policy makes of the token's MFA.

Tokens are issued in-process with the gateway's own signer (``issue_access_token``), as the
sign-in exchange will; the people are the seeded world's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
import pytest
from joserfc.jwk import ECKey

from garrison.domain import Level, Reason
from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.dpop import generate_proof_key, make_proof
from garrison.policy.context import IdentityPolicy
from tests.support.world import World

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    request_id: str


def principal_id(world: World, name: str) -> str:
    (found,) = [p.id for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    return found


def token_for(
    world: World, name: str, key: ECKey, *, amr: tuple[str, ...] = ("pwd", "otp"), **kw: Any
) -> str:
    now = time.time()
    claims = SessionClaims(
        principal_id=principal_id(world, name),
        session_id=f"s-{name}",
        jkt=key.thumbprint(),
        amr=amr,
        acr=None,
        auth_time=now,
        idp_issuer="https://idp.example",
        idp_subject=f"{name}-sub",
        issued_at=now,
        expires_at=now + 600,
    )
    tokens = world.gateway.state.tokens
    assert tokens is not None
    return issue_access_token(tokens.signer, replace(claims, **kw))


def signed(world: World, token: str, key: ECKey, method: str, path: str) -> dict[str, str]:
    proof = make_proof(
        key, method=method, url=world.base + path, now=time.time(), access_token=token
    )
    return {"authorization": f"DPoP {token}", "dpop": proof}


async def send(
    world: World, method: str, path: str, headers: dict[str, str], body: Any = None
) -> Reply:
    data = None if body is None else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            world.base + path,
            data=data,
            headers={**headers, "content-type": "application/json"},
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


async def chat(world: World, headers: dict[str, str], model: str = "assistant") -> Reply:
    return await send(
        world, "POST", "/v1/chat/completions", headers, {"model": model, "messages": USER}
    )


async def reasons_of(world: World, reply: Reply, name: str = "request.denied") -> list[str]:
    await world.settle()
    (event,) = [e for e in world.events(name) if e["request_id"] == reply.request_id]
    return list(event["data"]["reasons"])


async def test_a_bound_token_with_its_proof_calls_a_model(world: World) -> None:
    key = generate_proof_key()
    token = token_for(world, "carol", key)
    reply = await chat(world, signed(world, token, key, "POST", "/v1/chat/completions"))
    assert reply.status == 200, reply.body
    await world.settle()
    (event,) = [e for e in world.events("request.allowed") if e["request_id"] == reply.request_id]
    assert event["credential_id"] == "s-carol"
    assert event["principal_id"] == principal_id(world, "carol")


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("no-proof", Reason.DPOP_MISSING),
        ("other-key", Reason.DPOP_KEY_MISMATCH),
        ("other-path", Reason.DPOP_URL),
        ("other-method", Reason.DPOP_METHOD),
        ("expired", Reason.TOKEN_EXPIRED),
        ("replayed", Reason.DPOP_REPLAY),
    ],
)
async def test_refusals_are_401_and_audited(world: World, attack: str, reason: Reason) -> None:
    key = generate_proof_key()
    token = token_for(world, "carol", key)
    headers = signed(world, token, key, "POST", "/v1/chat/completions")
    if attack == "no-proof":
        del headers["dpop"]
    elif attack == "other-key":
        headers = signed(world, token, generate_proof_key(), "POST", "/v1/chat/completions")
    elif attack == "other-path":
        headers = signed(world, token, key, "POST", "/v1/messages")
    elif attack == "other-method":
        headers = signed(world, token, key, "GET", "/v1/chat/completions")
    elif attack == "expired":
        old = token_for(
            world, "carol", key, issued_at=time.time() - 700, expires_at=time.time() - 1
        )
        headers = signed(world, old, key, "POST", "/v1/chat/completions")
    elif attack == "replayed":
        assert (await chat(world, headers)).status == 200
    reply = await chat(world, headers)
    assert reply.status == 401, reply.body
    assert orjson.loads(reply.body)["error"]["code"] == "invalid_api_key"
    assert await reasons_of(world, reply) == [reason.value]
    assert token not in (await world_audit(world))


async def world_audit(world: World) -> str:
    await world.settle()
    return world.raw_audit().decode()


async def test_a_token_presented_as_a_bearer_key_is_refused(world: World) -> None:
    key = generate_proof_key()
    token = token_for(world, "carol", key)
    reply = await chat(world, {"authorization": f"Bearer {token}"})
    assert reply.status == 401
    assert await reasons_of(world, reply) == [Reason.CREDENTIAL_MALFORMED.value]


async def test_a_restricted_model_needs_mfa_from_a_token(world: World) -> None:
    key = generate_proof_key()
    path = "/v1/chat/completions"
    with_mfa = token_for(world, "alice", key)
    reply = await chat(world, signed(world, with_mfa, key, "POST", path), "cyber-model")
    assert reply.status == 200, reply.body
    password_only = token_for(world, "alice", key, amr=("pwd",), session_id="s-alice-2")
    reply = await chat(world, signed(world, password_only, key, "POST", path), "cyber-model")
    assert reply.status == 404
    assert await reasons_of(world, reply) == [Reason.MFA_REQUIRED.value]
    # The same person's internal-level call needs no MFA.
    reply = await chat(world, signed(world, password_only, key, "POST", path), "assistant")
    assert reply.status == 200


async def test_the_mfa_level_is_configurable(world: World) -> None:
    world.gateway.state.identity_policy = IdentityPolicy(mfa_from_level=Level.CRITICAL)
    await world.reload()  # a new engine: no decision cached under the old setting
    key = generate_proof_key()
    password_only = token_for(world, "alice", key, amr=("pwd",))
    path = "/v1/chat/completions"
    reply = await chat(world, signed(world, password_only, key, "POST", path), "cyber-model")
    assert reply.status == 200, reply.body


async def test_a_persons_bearer_key_is_refused_above_the_configured_level(world: World) -> None:
    world.gateway.state.identity_policy = IdentityPolicy(people_key_max_level=int(Level.INTERNAL))
    await world.reload()
    by_key = {"authorization": f"Bearer {world.keys['alice']}"}
    reply = await chat(world, by_key, "cyber-model")
    assert reply.status == 404
    assert await reasons_of(world, reply) == [Reason.PERSON_BEARER_KEY.value]
    assert (await chat(world, by_key, "assistant")).status == 200
    # The same person signed in (with MFA) still reaches it.
    key = generate_proof_key()
    token = token_for(world, "alice", key)
    reply = await chat(
        world, signed(world, token, key, "POST", "/v1/chat/completions"), "cyber-model"
    )
    assert reply.status == 200, reply.body


async def test_a_lock_on_the_person_refuses_their_token(world: World) -> None:
    key = generate_proof_key()
    token = token_for(world, "carol", key)
    status, _ = await admin(
        world, "POST", "/locks", {"kind": "principal", "target": "carol", "reason": "test"}
    )
    assert status == 201
    reply = await chat(world, signed(world, token, key, "POST", "/v1/chat/completions"))
    assert reply.status == 403
    assert await reasons_of(world, reply) == [Reason.LOCKED.value]


async def admin(world: World, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    reply = await send(
        world, method, "/admin/v1" + path, {"authorization": f"Bearer {world.admin_key}"}, body
    )
    return reply.status, orjson.loads(reply.body) if reply.body else None


async def test_the_admin_api_takes_a_bound_token(world: World) -> None:
    key = generate_proof_key()
    # The session's roles travel in the token (the directory's are intersected with them).
    token = token_for(world, "admin", key, roles=("security-admin",))
    reply = await send(
        world, "GET", "/admin/v1/whoami", signed(world, token, key, "GET", "/admin/v1/whoami")
    )
    assert reply.status == 200, reply.body
    assert orjson.loads(reply.body)["name"] == "admin"
    # Without its proof: 401 in the admin API's shape, audited with the reason.
    reply = await send(world, "GET", "/admin/v1/whoami", {"authorization": f"DPoP {token}"})
    assert reply.status == 401
    await world.settle()
    denied = [e for e in world.events("admin.denied") if e["request_id"] == reply.request_id]
    assert [e["data"]["reasons"] for e in denied] == [[Reason.DPOP_MISSING.value]]


async def test_a_call_in_flight_ends_when_its_token_expires(world: World) -> None:
    from garrison.gateway.containment import _withdrawn
    from garrison.identity.access_tokens import verify_access_token

    key = generate_proof_key()
    token = token_for(world, "carol", key)
    tokens = world.gateway.state.tokens
    assert tokens is not None
    session = verify_access_token(tokens.signer.keys, token, now=time.time())

    @dataclass
    class LiveCall:
        session: SessionClaims
        credential_id: str = "s-carol"
        model: str = "assistant"

    snap = world.gateway.state.snapshot
    assert _withdrawn(snap, LiveCall(session), session.expires_at - 1) is None
    assert _withdrawn(snap, LiveCall(session), session.expires_at) is Reason.TOKEN_EXPIRED
