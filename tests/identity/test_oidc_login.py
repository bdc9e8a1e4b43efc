"""The CLI's side of the flows, against httpx's mock transport: PKCE, the device grant's
polling rules (RFC 8628 §3.5), state checking on the loopback redirect, logout; the real
provider drives the same code in tests/e2e/test_oidc_signin.py."""

from __future__ import annotations

import base64
import hashlib
import stat
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from garrison.cli.main import cli
from garrison.identity.client_session import ClientSession, save_session
from garrison.identity.dpop import generate_proof_key
from garrison.identity.oidc_keys import ProviderMetadata
from garrison.identity.oidc_login import (
    DEVICE_POLL_DEFAULT_S,
    DEVICE_SLOW_DOWN_S,
    LoginFailed,
    ProviderInfo,
    Tokens,
    browser_login,
    device_login,
    idp_session_path,
    logout,
    pkce_pair,
    save_idp_session,
)

ISSUER = "https://idp.example.com"
META = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/auth",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks",
    device_authorization_endpoint=f"{ISSUER}/device/auth",
)
PROVIDER = ProviderInfo("default", ISSUER, "garrison-cli", ("openid",))


def test_pkce_verifier_and_s256_challenge() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128  # RFC 7636 §4.1
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


def test_device_polling_waits_and_slows_down_when_told() -> None:
    answers = iter(["authorization_pending", "slow_down", "authorization_pending", None])
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/device/auth":
            form = parse_qs(request.content.decode())
            assert form["nonce"] == ["jkt.n"]
            return httpx.Response(
                200,
                json={"device_code": "dc", "user_code": "AB-CD", "verification_uri": "u"},
            )
        error = next(answers)
        if error is None:
            return httpx.Response(200, json={"id_token": "idt", "refresh_token": "rt"})
        return httpx.Response(400, json={"error": error})

    said: list[str] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        tokens = device_login(
            client, PROVIDER, META, nonce="jkt.n", say=said.append, sleep=sleeps.append
        )
    assert tokens == Tokens("idt", "rt")
    assert "AB-CD" in said[0]
    first = DEVICE_POLL_DEFAULT_S
    assert sleeps == [first, first, first + DEVICE_SLOW_DOWN_S, first + DEVICE_SLOW_DOWN_S]


def test_device_flow_stops_on_a_refusal() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/device/auth":
            return httpx.Response(200, json={"device_code": "dc", "verification_uri": "u"})
        return httpx.Response(400, json={"error": "access_denied"})

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(LoginFailed, match="access_denied"),
    ):
        device_login(client, PROVIDER, META, nonce="n", say=lambda _t: None, sleep=lambda _s: None)


def _redirect_with(query: dict[str, str]) -> Any:
    """A 'browser' that lands on the CLI's listener with ``query`` (state taken from the
    authorization URL unless given)."""

    def open_browser(url: str) -> None:
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        answer = {"state": params["state"], **query}
        threading.Thread(
            target=httpx.get, args=(params["redirect_uri"],), kwargs={"params": answer}
        ).start()

    return open_browser


def test_a_redirect_with_another_state_is_refused() -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client,
        pytest.raises(LoginFailed, match="wrong state"),
    ):
        browser_login(
            client,
            PROVIDER,
            META,
            nonce="n",
            open_browser=_redirect_with({"state": "forged", "code": "c"}),
            say=lambda _t: None,
            timeout_s=10,
        )


def test_a_redirect_from_another_issuer_is_refused() -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client,
        pytest.raises(LoginFailed, match="another provider"),
    ):
        browser_login(
            client,
            PROVIDER,
            META,
            nonce="n",
            open_browser=_redirect_with({"code": "c", "iss": "https://evil.example"}),
            say=lambda _t: None,
            timeout_s=10,
        )


def test_the_code_is_redeemed_with_the_pkce_verifier() -> None:
    seen: dict[str, list[str]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(parse_qs(request.content.decode()))
        return httpx.Response(200, json={"id_token": "idt"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        tokens = browser_login(
            client,
            PROVIDER,
            META,
            nonce="n",
            open_browser=_redirect_with({"code": "the-code"}),
            say=lambda _t: None,
            timeout_s=10,
        )
    assert tokens.id_token == "idt"
    assert seen["code"] == ["the-code"] and len(seen["code_verifier"][0]) >= 43
    assert seen["redirect_uri"][0].startswith("http://127.0.0.1:")


def test_logout_removes_the_session_and_the_refresh_token(tmp_path: Path) -> None:
    session = tmp_path / "garrison" / "session.json"
    key = generate_proof_key()
    save_session(ClientSession("tok", 1e12, key.as_dict(private=True), "http://g"), session)
    save_idp_session(idp_session_path(session), PROVIDER, "refresh-secret")
    idp_file = idp_session_path(session)
    assert stat.S_IMODE(idp_file.stat().st_mode) == 0o600
    assert "refresh-secret" in idp_file.read_text()
    removed = logout(session)
    assert removed == [str(session), str(idp_file)]
    assert not session.exists() and not idp_file.exists()


def test_logout_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["logout", "--session-file", str(tmp_path / "s.json")])
    assert result.exit_code == 0 and "no session was stored" in result.output
