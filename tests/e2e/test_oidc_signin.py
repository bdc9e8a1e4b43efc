"""People sign in through a real OpenID provider (oidc-provider on Node, tests/idp) from the
CLI's own code: the loopback PKCE flow and the device flow, linking at the first sign-in,
MFA claims, group narrowing, key rotation, and the attacks on the exchange.

Set-up goes through the admin API (people, invitations, locks); the provider is configured
by the test (users, one-time codes, groups, keys). A second provider is bound to the vendor
``contractor-co``.
"""

from __future__ import annotations

import asyncio
import itertools
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.admin.session_api import SIGNIN_KEY
from garrison.identity.dpop import generate_proof_key, make_proof, proof_key_thumbprint
from garrison.identity.oidc_config import OidcProvider, OidcSettings
from garrison.identity.oidc_login import (
    LoginFailed,
    ProviderInfo,
    browser_login,
    discover,
    exchange,
    login,
    new_nonce,
)
from tests.support.admin import admin_call, lift_enroll_limits
from tests.support.callers import approve_as_second_admin
from tests.support.idp import CLIENT_ID, Browser, TestIdp, User, node_missing_reason
from tests.support.world import World, start_world, stop_world

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(node_missing_reason() is not None, reason=str(node_missing_reason())),
]

USERS = {
    "u-carol": User("pw-carol", otp="111111", email="carol@example.com"),
    "u-dana": User("pw-dana", otp="222222", groups=["garrison-auditors"]),
    "u-erin": User("pw-erin", otp=None),  # a password alone: single factor
    "u-frank": User("pw-frank", otp="333333"),
    # Same email as carol: never matched (links are (iss, sub) only).
    "u-stranger": User("pw-stranger", otp="444444", email="carol@example.com"),
}
VENDOR_USERS = {
    # The same username (sub) as an internal person's account, at the vendor's provider.
    "u-carol": User("pw-vendor-carol", otp="777777"),
    "v-vic": User("pw-vic", otp="555555"),
    "v-mallory": User("pw-mallory", otp="666666"),
}
_sources = itertools.count(10)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdp]:
    provider = TestIdp(tmp_path_factory.mktemp("idp"), dict(USERS)).start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def vendor_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdp]:
    provider = TestIdp(tmp_path_factory.mktemp("vidp"), dict(VENDOR_USERS)).start()
    yield provider
    provider.stop()


@pytest.fixture
async def world(tmp_path: Path, idp: TestIdp, vendor_idp: TestIdp) -> AsyncIterator[World]:
    oidc = OidcSettings(
        (
            OidcProvider(
                issuer=idp.issuer,
                client_id=CLIENT_ID,
                scopes=("openid", "email", "groups"),
                person_claim="email",
                role_groups={"auditor": "garrison-auditors"},
                # oidc-provider drops the nonce in the device flow (as most providers do).
                require_nonce=False,
            ),
            OidcProvider(
                issuer=vendor_idp.issuer,
                client_id=CLIENT_ID,
                scopes=("openid", "groups"),
                vendor="contractor-co",
            ),
        )
    )
    w = await start_world(tmp_path, oidc=oidc)
    lift_enroll_limits(w)
    w.gateway.http.app[SIGNIN_KEY].limiter.per_source = 10**6
    w.gateway.http.app[SIGNIN_KEY].limiter.overall = 10**6
    try:
        yield w
    finally:
        await stop_world(w)


async def person(world: World, name: str, org: str = "internal", **fields: Any) -> str:
    """Create a person through the admin API and return their invitation's code."""
    status, created = await admin_call(
        world, world.admin_key, "POST", "/principals", {"name": name, "org": org, **fields}
    )
    if status == 202:
        await approve_as_second_admin(world, created["pending"]["id"])
    else:
        assert status == 201, created
    await world.reload()
    status, invitation = await admin_call(
        world, world.admin_key, "POST", f"/principals/{name}/invite", {}
    )
    if status == 202:
        await approve_as_second_admin(world, invitation["pending"]["id"])
        status, invitation = await admin_call(
            world, world.admin_key, "POST", f"/principals/{name}/invite", {}
        )
    assert status == 201, invitation
    return str(invitation["enrollment_code"])


def machine() -> str:
    """A loopback address of its own: the person's machine, not the inviting admin's."""
    n = next(_sources)
    return f"127.2.{n // 250 % 250}.{n % 250 + 1}"


async def sign_in(
    world: World,
    user: str,
    users: dict[str, User],
    tmp_path: Path,
    *,
    code: str | None = None,
    provider: str | None = None,
    browser: Browser | None = None,
    address: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    u = users[user]
    own = browser is None
    browser = browser or Browser(user, u.password, u.otp)
    try:
        return await asyncio.to_thread(
            login,
            world.base,
            provider_name=provider,
            enrollment_code=code,
            session_path=tmp_path / f"{user}-session.json",
            open_browser=browser.open,
            say=lambda _text: None,
            local_address=address or machine(),
            timeout_s=30,
            **kw,
        )
    finally:
        if own:
            browser.close()


# ── linking and the two flows ─────────────────────────────────────────────────────────────
async def test_first_sign_in_links_through_the_invitation_then_no_code_is_needed(
    world: World, tmp_path: Path
) -> None:
    code = await person(world, "carol2")
    first = await sign_in(world, "u-carol", USERS, tmp_path, code=code)
    assert first["principal"] == "carol2" and first["token_type"] == "DPoP"
    assert first["mfa"] is True
    session_file = Path(first["session_file"])
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert "access_token" not in first  # never printed; only in the 0600 file
    again = await sign_in(world, "u-carol", USERS, tmp_path)
    assert again["principal"] == "carol2"
    await world.settle()
    linked = world.events("identity.linked")
    assert len(linked) == 1 and linked[0]["data"]["provider"] == "default"
    started = world.events("session.started")
    assert len(started) == 2
    assert started[0]["data"]["person"] == "carol@example.com"  # recorded, never matched
    assert "access_token" not in str(started)


async def test_a_used_code_cannot_link_a_second_identity(world: World, tmp_path: Path) -> None:
    code = await person(world, "carol3")
    await sign_in(world, "u-carol", USERS, tmp_path, code=code)
    with pytest.raises(LoginFailed, match="not valid"):
        await sign_in(world, "u-frank", USERS, tmp_path, code=code)


async def test_a_sign_in_with_no_link_is_refused(world: World, tmp_path: Path) -> None:
    with pytest.raises(LoginFailed, match="not linked"):
        await sign_in(world, "u-stranger", USERS, tmp_path)
    await world.settle()
    refused = world.events("session.refused")
    assert refused[-1]["data"]["reasons"] == ["oidc.not_linked"]
    # Garrison never creates people from a login.
    status, people = await admin_call(world, world.admin_key, "GET", "/principals")
    assert status == 200 and not any("stranger" in p["name"] for p in people)


async def test_device_flow_signs_in_without_a_browser_here(world: World, tmp_path: Path) -> None:
    code = await person(world, "frank")
    printed: list[str] = []
    browser = Browser("u-frank", USERS["u-frank"].password, USERS["u-frank"].otp)

    def say(text: str) -> None:
        printed.append(text)

    task = asyncio.create_task(
        asyncio.to_thread(
            login,
            world.base,
            device=True,
            enrollment_code=code,
            session_path=tmp_path / "frank.json",
            say=say,
            local_address=machine(),
            timeout_s=60,
        )
    )
    deadline = time.monotonic() + 20
    while not printed and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert printed, "the CLI printed no verification URL"
    url = printed[0].split("open ", 1)[1].split(" and enter", 1)[0]
    await asyncio.to_thread(browser.approve_device, url)
    browser.close()
    result = await task
    assert result["principal"] == "frank" and result["mfa"] is True


async def test_the_login_and_logout_commands(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from garrison.cli.main import cli

    code = await person(world, "hank")
    browser = Browser("u-frank", USERS["u-frank"].password, USERS["u-frank"].otp)
    monkeypatch.setattr("webbrowser.open", browser.open)
    monkeypatch.setenv("GARRISON_SOURCE_ADDRESS", machine())
    session = tmp_path / "cli-session.json"
    args = ["login", "--gateway", world.base, "--code", code, "--session-file", str(session)]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    browser.close()
    assert result.exit_code == 0, result.output
    assert "signed in as hank" in result.output and "with MFA" in result.output
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert session.read_text().count("access_token") == 1  # stored, never printed
    assert "eyJ" not in result.output
    result = CliRunner().invoke(cli, ["logout", "--session-file", str(session)])
    assert result.exit_code == 0 and "signed out" in result.output
    assert not session.exists()


def _chat(session_path: Path, model: str) -> str:
    import openai

    import garrison.client

    client = openai.OpenAI(
        base_url=garrison.client.base_url("/v1", session_path),
        api_key="garrison",
        max_retries=0,
        http_client=garrison.client.http_client(session_path),
    )
    try:
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}]
        )
        return str(answer.choices[0].message.content)
    finally:
        client.close()


async def test_an_mfa_sign_in_reaches_a_restricted_model_with_the_openai_client(
    world: World, tmp_path: Path
) -> None:
    import openai

    code = await person(world, "rhea", clearance="restricted", compartments=["cyber"])
    result = await sign_in(world, "u-frank", USERS, tmp_path, code=code)
    assert result["mfa"] is True
    session = Path(result["session_file"])
    assert await asyncio.to_thread(_chat, session, "cyber-model")
    # The same person signed in with a password alone: the restricted model wants MFA.
    code = await person(world, "ivan", clearance="restricted", compartments=["cyber"])
    single = await sign_in(world, "u-erin", USERS, tmp_path, code=code)
    assert single["mfa"] is False
    with pytest.raises(openai.NotFoundError):  # no oracle: refused like an unknown model
        await asyncio.to_thread(_chat, Path(single["session_file"]), "cyber-model")
    await world.settle()
    assert "mfa.required" in world.events("request.denied")[-1]["data"]["reasons"]


async def test_refresh_renews_the_session_through_the_providers_refresh_token(
    world: World, tmp_path: Path
) -> None:
    code = await person(world, "ursula")
    first = await sign_in(world, "u-frank", USERS, tmp_path, code=code)
    session = Path(first["session_file"])
    old_token = session.read_text()
    assert (session.parent / "idp-session.json").exists()
    # A refresh in the same second gets the very same ID token back (RS256 signatures are
    # deterministic), which is a replay: refreshes come minutes apart, not within a second.
    await asyncio.sleep(1.1)
    renewed = await asyncio.to_thread(
        login,
        world.base,
        refresh=True,
        session_path=session,
        say=lambda _t: None,
        local_address=machine(),
    )
    assert renewed["principal"] == "ursula" and session.read_text() != old_token
    await world.settle()
    started = world.events("session.started")[-2:]
    # Same sign-in at the provider: auth_time does not move, so a refresh is never "fresh
    # MFA" for step-up; the key is the one stored with the session.
    assert started[0]["data"]["auth_time"] == started[1]["data"]["auth_time"]
    assert started[0]["data"]["jkt"] == started[1]["data"]["jkt"]


async def with_session(world: World, session_path: Path, method: str, path: str) -> Any:
    """One admin call with the stored session (token + a proof from its key)."""
    from garrison.identity.client_session import load_session

    stored = load_session(session_path)
    proof = make_proof(
        stored.proof_key(),
        method=method,
        url=world.base + path,
        now=time.time(),
        access_token=stored.access_token,
    )
    headers = {"authorization": f"DPoP {stored.access_token}", "dpop": proof}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.request(method, world.base + path, headers=headers)
    return response.status_code, response.json()


# ── MFA, groups ───────────────────────────────────────────────────────────────────────────
async def test_a_password_only_sign_in_carries_no_mfa(world: World, tmp_path: Path) -> None:
    code = await person(world, "erin")
    result = await sign_in(world, "u-erin", USERS, tmp_path, code=code)
    assert result["mfa"] is False
    await world.settle()
    assert world.events("session.started")[-1]["data"]["amr"] == ["pwd"]


async def test_groups_only_narrow_roles_at_the_next_sign_in(
    world: World, tmp_path: Path, idp: TestIdp
) -> None:
    code = await person(world, "dana", roles=["auditor"])
    kept = await sign_in(world, "u-dana", USERS, tmp_path, code=code)
    assert kept["roles"] == ["auditor"] and kept["roles_dropped"] == []
    session = Path(kept["session_file"])
    assert (await with_session(world, session, "GET", "/admin/v1/principals"))[0] == 200
    # Removed from the provider's group: the next sign-in's session lacks the role.
    idp.users["u-dana"] = User("pw-dana", otp="222222", groups=[])
    idp.stop()
    idp.start()
    try:
        narrowed = await sign_in(world, "u-dana", USERS, tmp_path)
        assert narrowed["roles"] == [] and narrowed["roles_dropped"] == ["auditor"]
        # The admin API holds the session to it: dana still has the role in Garrison, but
        # not in this session.
        status, body = await with_session(world, session, "GET", "/admin/v1/principals")
        assert status == 403, body
    finally:
        idp.users["u-dana"] = USERS["u-dana"]
        idp.stop()
        idp.start()


# ── key rotation ──────────────────────────────────────────────────────────────────────────
async def test_a_rotated_provider_key_is_fetched_once_the_refetch_limit_allows(
    world: World, tmp_path: Path, idp: TestIdp
) -> None:
    code = await person(world, "carol4")
    await sign_in(world, "u-carol", USERS, tmp_path, code=code)
    keys = world.gateway.http.app[SIGNIN_KEY].keys[idp.issuer]
    fetched = keys.fetches
    idp.rotate(f"key-{len(idp.keys) + 1}")
    # The new kid is unknown and the last fetch is recent: refused, no fetch.
    with pytest.raises(LoginFailed):
        await sign_in(world, "u-carol", USERS, tmp_path)
    assert keys.fetches == fetched
    # Once the interval has passed (shortened here), one fetch finds the new key.
    keys.refetch_interval_s = 0.0
    result = await sign_in(world, "u-carol", USERS, tmp_path)
    assert result["principal"] == "carol4" and keys.fetches == fetched + 1


# ── vendors ───────────────────────────────────────────────────────────────────────────────
async def test_a_vendors_provider_signs_in_that_vendors_people(
    world: World, tmp_path: Path
) -> None:
    code = await person(world, "vic", org="contractor-co")
    result = await sign_in(
        world, "v-vic", VENDOR_USERS, tmp_path, code=code, provider="contractor-co"
    )
    assert result["principal"] == "vic" and result["provider"] == "contractor-co"


async def test_a_vendors_provider_cannot_assert_an_internal_person(
    world: World, tmp_path: Path
) -> None:
    code = await person(world, "gina")  # internal
    with pytest.raises(LoginFailed, match="not valid"):
        await sign_in(
            world, "v-mallory", VENDOR_USERS, tmp_path, code=code, provider="contractor-co"
        )
    await world.settle()
    refused = world.events("enrollment.refused")[-1]
    assert refused["data"]["reasons"] == ["oidc.vendor_bound"]
    # The code still works for gina through the organisation's provider.
    assert (await sign_in(world, "u-frank", USERS, tmp_path, code=code))["principal"] == "gina"


# ── attacks on the exchange ───────────────────────────────────────────────────────────────
def _id_token(world: World, idp: TestIdp, user: str, jkt: str) -> str:
    """An ID token from the real provider whose nonce names ``jkt``."""
    info = ProviderInfo("default", idp.issuer, CLIENT_ID, ("openid", "email", "groups"))
    u = USERS[user]
    browser = Browser(user, u.password, u.otp)
    try:
        with httpx.Client(timeout=10) as client:
            meta = discover(client, idp.issuer)
            tokens = browser_login(
                client,
                info,
                meta,
                nonce=new_nonce(jkt),
                open_browser=browser.open,
                say=lambda _t: None,
                timeout_s=30,
            )
    finally:
        browser.close()
    return tokens.id_token


async def _exchange(world: World, id_token: str, key: Any, address: str) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(transport=transport, timeout=10) as client:
            return exchange(client, world.base, id_token, key)

    return await asyncio.to_thread(run)


async def _linked(world: World, tmp_path: Path, name: str, user: str) -> None:
    code = await person(world, name)
    await sign_in(world, user, USERS, tmp_path, code=code)


async def test_an_id_token_is_exchanged_once(world: World, tmp_path: Path, idp: TestIdp) -> None:
    await _linked(world, tmp_path, "carol5", "u-carol")
    key = generate_proof_key()
    token = await asyncio.to_thread(_id_token, world, idp, "u-carol", proof_key_thumbprint(key))
    address = machine()
    assert (await _exchange(world, token, key, address))["principal"] == "carol5"
    with pytest.raises(LoginFailed, match="identity token is not valid"):
        await _exchange(world, token, key, address)
    await world.settle()
    assert world.events("session.refused")[-1]["data"]["reasons"] == ["oidc.id_token_replayed"]


async def test_a_stolen_id_token_is_useless_with_another_key(
    world: World, tmp_path: Path, idp: TestIdp
) -> None:
    await _linked(world, tmp_path, "carol6", "u-carol")
    victim_key = generate_proof_key()
    token = await asyncio.to_thread(
        _id_token, world, idp, "u-carol", proof_key_thumbprint(victim_key)
    )
    with pytest.raises(LoginFailed, match="identity token is not valid"):
        await _exchange(world, token, generate_proof_key(), machine())
    await world.settle()
    refused = world.events("session.refused")[-1]["data"]
    assert refused["reasons"] == ["oidc.id_token_invalid"] and refused["detail"] == "nonce"


async def test_an_exchange_without_a_proof_is_refused(
    world: World, tmp_path: Path, idp: TestIdp
) -> None:
    await _linked(world, tmp_path, "carol7", "u-carol")
    key = generate_proof_key()
    token = await asyncio.to_thread(_id_token, world, idp, "u-carol", proof_key_thumbprint(key))
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{world.base}/auth/v1/token", json={"id_token": token})
        assert response.status_code == 401
        # A proof for another URL is refused too.
        proof = make_proof(key, method="POST", url=f"{world.base}/elsewhere", now=time.time())
        response = await client.post(
            f"{world.base}/auth/v1/token", json={"id_token": token}, headers={"DPoP": proof}
        )
        assert response.status_code == 401


async def test_a_locked_person_cannot_sign_in(world: World, tmp_path: Path) -> None:
    await _linked(world, tmp_path, "carol8", "u-carol")
    status, lock = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "principal", "target": "carol8", "reason": "suspected compromise"},
    )
    assert status == 201, lock
    await world.reload()
    with pytest.raises(LoginFailed, match="locked"):
        await sign_in(world, "u-carol", USERS, tmp_path)


async def test_a_lock_on_the_network_a_person_signs_in_from_refuses_the_exchange(
    world: World, tmp_path: Path
) -> None:
    """The exchange takes the one admission step: a caller-level lock (here the network the
    person comes from, not the person) refuses it, and the refusal names the lock."""
    await _linked(world, tmp_path, "carol10", "u-carol")
    address = machine()
    status, lock = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "network", "target": f"{address}/32", "reason": "suspected compromise"},
    )
    assert status == 201, lock
    await world.reload()
    with pytest.raises(LoginFailed, match="locked"):
        await sign_in(world, "u-carol", USERS, tmp_path, address=address)
    await world.settle()
    refused = world.events("session.refused")[-1]
    assert refused["data"]["reasons"] == ["lock.active"] and refused["data"]["lock"] == lock["id"]


async def test_a_disabled_person_cannot_sign_in(world: World, tmp_path: Path) -> None:
    await _linked(world, tmp_path, "carol9", "u-carol")
    status, body = await admin_call(
        world, world.admin_key, "PATCH", "/principals/carol9", {"status": "disabled"}
    )
    assert status in (200, 202), body
    if status == 202:
        await approve_as_second_admin(world, body["pending"]["id"])
    await world.reload()
    with pytest.raises(LoginFailed, match="disabled"):
        await sign_in(world, "u-carol", USERS, tmp_path)


async def test_sign_in_attempts_are_limited_per_source(world: World) -> None:
    limiter = world.gateway.http.app[SIGNIN_KEY].limiter
    limiter.per_source = 3
    statuses = []
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(limiter.per_source + 1):
            response = await client.post(f"{world.base}/auth/v1/token", json={"id_token": "x"})
            statuses.append(response.status_code)
    assert statuses == [401] * limiter.per_source + [429]
    await world.settle()
    assert world.events("session.refused")[-1]["data"]["reasons"] == [
        "identity.enroll_rate_limited"
    ]


async def test_the_same_sub_at_a_vendors_provider_is_another_identity(
    world: World, tmp_path: Path
) -> None:
    code = await person(world, "carol10")
    await sign_in(world, "u-carol", USERS, tmp_path, code=code)
    with pytest.raises(LoginFailed, match="not linked"):
        await sign_in(world, "u-carol", VENDOR_USERS, tmp_path, provider="contractor-co")


def _forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(mac)}"


async def test_forged_id_tokens_are_refused_at_the_exchange(
    world: World, tmp_path: Path, idp: TestIdp
) -> None:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    await _linked(world, tmp_path, "carol11", "u-carol")
    key = generate_proof_key()
    jkt = proof_key_thumbprint(key)
    now = int(time.time())
    claims = {
        "iss": idp.issuer,
        "sub": "u-carol",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "auth_time": now,
        "nonce": f"{jkt}.x",
        "amr": ["pwd", "otp", "mfa"],
    }
    public_pem = RSAKey.import_key(idp.keys[0]).as_pem(private=False)
    attacker = RSAKey.generate_key(2048, private=True, parameters={"kid": idp.keys[0]["kid"]})
    keys = world.gateway.http.app[SIGNIN_KEY].keys[idp.issuer]
    forged = {
        "alg none": _forge({"alg": "none", "kid": idp.keys[0]["kid"]}, claims),
        "hs256 with the public key": _forge(
            {"alg": "HS256", "kid": idp.keys[0]["kid"]}, claims, public_pem
        ),
        "attacker's key, real kid": jwt.encode(
            {"alg": "RS256", "kid": attacker.kid}, claims, attacker
        ),
        "unknown kid": jwt.encode({"alg": "RS256", "kid": "nobody"}, claims, attacker),
        "kid injection": jwt.encode(
            {"alg": "RS256", "kid": "../../../etc/passwd"}, claims, attacker
        ),
        "expired": jwt.encode(
            {"alg": "RS256", "kid": idp.keys[0]["kid"]},
            {**claims, "exp": now - 3600, "iat": now - 4000},
            RSAKey.import_key(idp.keys[0]),
        ),
        "wrong audience": jwt.encode(
            {"alg": "RS256", "kid": idp.keys[0]["kid"]},
            {**claims, "aud": "another-app"},
            RSAKey.import_key(idp.keys[0]),
        ),
    }
    fetched = keys.fetches
    for name, token in forged.items():
        with pytest.raises(LoginFailed, match="identity token is not valid"):
            await _exchange(world, token, key, machine())
        await world.settle()
        refused = world.events("session.refused")[-1]["data"]
        assert refused["reasons"] == ["oidc.id_token_invalid"], name
    # Invented kids cost the provider at most one key fetch.
    assert keys.fetches - fetched <= 1
    # The genuine key still signs in (the forged "expired"/"aud" tokens were signed by it).
    assert (await sign_in(world, "u-carol", USERS, tmp_path))["principal"] == "carol11"
