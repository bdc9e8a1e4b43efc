"""Callers and models made through the admin API, for end-to-end tests that set up state only
through the public interface."""

from __future__ import annotations

from typing import Any

from tests.support.admin import admin_call, make_admin
from tests.support.world import World


async def service_key(world: World, name: str = "svc-caller") -> str:
    """A service principal (org internal, clearance internal) and a key for it."""
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": name, "org": "internal", "kind": "service"},
    )
    assert status == 201, body
    status, body = await admin_call(world, world.admin_key, "POST", "/keys", {"principal": name})
    assert status == 201, body
    key: str = body["key"]
    return key


async def register_model(world: World, name: str, port: int, **fields: Any) -> None:
    """A model at level internal served by the upstream on 127.0.0.1:``port``; reloaded.

    When the admin API makes it a proposal (the mock upstream also serves the world's
    restricted cyber-model, so a new model there takes two admins), a second security-admin
    approves it."""
    body = {"name": name, "upstream_url": f"http://127.0.0.1:{port}/v1", **fields}
    status, answer = await admin_call(world, world.admin_key, "POST", "/models", body)
    if status == 202:
        answer = await approve_as_second_admin(world, answer["pending"]["id"])
    else:
        assert status == 201, answer
    assert answer["name"] == name, answer
    await world.reload()


async def approve_as_second_admin(world: World, change_id: str) -> dict[str, Any]:
    """A second security-admin (seated once per world, with a key of their own) approves
    the pending change ``change_id`` through the admin API; returns what it applied."""
    key = world.keys.get(SECOND_ADMIN)
    if key is None:
        key = world.keys[SECOND_ADMIN] = make_admin(world, SECOND_ADMIN, ["security-admin"])
        await world.reload()
    path = f"/changes/{change_id}/approve"
    if world.settings.oidc.enabled:
        # With sign-in configured, approvals need a fresh MFA session, not a key.
        status, approved = await session_call(world, SECOND_ADMIN, "POST", path, {})
    else:
        status, approved = await admin_call(world, key, "POST", path, {})
    assert status == 200, approved
    result: dict[str, Any] = approved["result"]
    return result


SECOND_ADMIN = "sec-second"  # the approving admin these helpers seat


async def session_call(
    world: World, name: str, method: str, path: str, body: Any
) -> tuple[int, Any]:
    """One admin call as person ``name`` signed in with fresh MFA: the token is issued
    in-process with the gateway's signer (the sign-in itself is tests/e2e's), bound to a
    new key that signs the call's proof."""
    import time

    import aiohttp
    import orjson

    from garrison.identity.access_tokens import SessionClaims, issue_access_token
    from garrison.identity.dpop import generate_proof_key, make_proof

    (person,) = [p for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    pid = person.id
    key = generate_proof_key()
    now = time.time()
    tokens = world.gateway.state.tokens
    assert tokens is not None
    token = issue_access_token(
        tokens.signer,
        SessionClaims(
            principal_id=pid,
            session_id=f"ses_{name}",
            jkt=key.thumbprint(),
            amr=("pwd", "otp", "mfa"),
            acr=None,
            auth_time=now,
            idp_issuer="https://idp.example",
            idp_subject=f"{name}-sub",
            issued_at=now,
            expires_at=now + 600,
            roles=tuple(sorted(person.roles)),  # the session holds what the directory grants
        ),
    )
    url = f"{world.base}/admin/v1{path}"
    proof = make_proof(key, method=method, url=url, now=now, access_token=token)
    headers = {"authorization": f"DPoP {token}", "dpop": proof, "content-type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=orjson.dumps(body), headers=headers) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())
