"""Step-up through the admin API: an approval or a lock lift made with a sign-in session
needs MFA within MFA_FRESH_S; otherwise 403 ``step_up_required`` (audited), which tells the
CLI to send the person through the provider again. Keys are not sessions: without OIDC,
approvals carry no MFA (docs/identity.md).

The sessions' tokens are issued in-process with the gateway's signer (the sign-in itself is
driven through a real provider in tests/e2e/test_oidc_signin.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from joserfc.jwk import ECKey

from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.dpop import generate_proof_key, make_proof
from garrison.identity.step_up import MFA_FRESH_S
from tests.support.admin import admin_call, make_admin
from tests.support.world import World

pytestmark = pytest.mark.e2e

MFA = ("pwd", "otp", "mfa")


def session_token(world: World, name: str, key: ECKey, **kw: Any) -> str:
    (pid,) = [p.id for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    now = time.time()
    claims = SessionClaims(
        principal_id=pid,
        session_id=f"ses_{name}",
        jkt=key.thumbprint(),
        amr=MFA,
        acr=None,
        auth_time=now - 5,
        idp_issuer="https://idp.example",
        idp_subject=f"{name}-sub",
        issued_at=now,
        expires_at=now + 600,
        # The roles the session holds (the directory's are intersected with them per call).
        roles=("security-admin",),
    )
    tokens = world.gateway.state.tokens
    assert tokens is not None
    return issue_access_token(tokens.signer, replace(claims, **kw))


async def as_session(
    world: World, token: str, key: ECKey, method: str, path: str, body: Any
) -> tuple[int, Any]:
    url = f"{world.base}/admin/v1{path}"
    proof = make_proof(key, method=method, url=url, now=time.time(), access_token=token)
    headers = {"authorization": f"DPoP {token}", "dpop": proof, "content-type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=orjson.dumps(body), headers=headers) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


async def pending_change(world: World, name: str) -> str:
    """A two-person change (a person with a role) proposed by the first admin."""
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": name, "org": "internal", "roles": ["auditor"]},
    )
    assert status == 202, body
    return str(body["pending"]["id"])


async def approver(world: World) -> ECKey:
    make_admin(world, "approver2", ["security-admin"])
    await world.reload()
    return generate_proof_key()


async def test_a_fresh_mfa_session_approves(world: World) -> None:
    key = await approver(world)
    change = await pending_change(world, "p-fresh")
    token = session_token(world, "approver2", key)
    status, body = await as_session(world, token, key, "POST", f"/changes/{change}/approve", {})
    assert status == 200, body


@pytest.mark.parametrize(
    "claims",
    [
        {"auth_time": time.time() - MFA_FRESH_S - 60},  # MFA, but too long ago
        {"amr": ("pwd",)},  # fresh, but one factor
    ],
    ids=["stale-mfa", "single-factor"],
)
async def test_a_session_without_fresh_mfa_must_step_up(
    world: World, claims: dict[str, Any]
) -> None:
    key = await approver(world)
    change = await pending_change(world, "p-stale")
    token = session_token(world, "approver2", key, **claims)
    status, body = await as_session(world, token, key, "POST", f"/changes/{change}/approve", {})
    assert status == 403
    assert body["error"]["type"] == "step_up_required"
    assert "garrison login --max-age" in body["error"]["message"]
    await world.settle()
    assert world.events("admin.denied")[-1]["data"]["reasons"] == ["mfa.step_up_required"]
    # Nothing was approved: the change is still pending.
    status, pending = await admin_call(world, world.admin_key, "GET", "/changes")
    assert any(c["id"] == change for c in pending), pending


async def test_lifting_a_lock_with_a_session_needs_fresh_mfa(world: World) -> None:
    key = await approver(world)
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
    stale = session_token(world, "approver2", key, auth_time=time.time() - MFA_FRESH_S - 1)
    status, body = await as_session(world, stale, key, "POST", path, {"reason": "cleared"})
    assert status == 403 and body["error"]["type"] == "step_up_required"
    fresh = session_token(world, "approver2", key)
    status, body = await as_session(world, fresh, key, "POST", path, {"reason": "cleared"})
    assert status == 200, body


async def test_a_key_approves_without_mfa_when_no_session_is_used(world: World) -> None:
    """Keys carry no MFA: this is the embedded default's documented limitation."""
    approver_key = make_admin(world, "approver3", ["security-admin"])
    await world.reload()
    change = await pending_change(world, "p-key")
    status, body = await admin_call(world, approver_key, "POST", f"/changes/{change}/approve", {})
    assert status == 200, body
