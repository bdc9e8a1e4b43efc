"""``garrison.client`` signs only for the session's gateway (and the origins the caller
names): a request for another origin (a mistyped or injected base URL) raises
``ForeignOrigin`` before the token is attached, so it never leaves the process."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import httpx2
import pytest

from garrison.client import DPoPAuth, ForeignOrigin, http_client, origin
from garrison.identity.client_session import ClientSession, save_session
from garrison.identity.dpop import generate_proof_key

GATEWAY = "https://garrison.example:8443"
TOKEN = "eyJ.token.example"


@pytest.fixture
def session_path(tmp_path: Path) -> Path:
    key = generate_proof_key()
    session = ClientSession(
        access_token=TOKEN,
        expires_at=time.time() + 600,
        dpop_private_jwk=key.as_dict(private=True),
        gateway_url=GATEWAY,
    )
    return save_session(session, tmp_path / "session.json")


def _recording_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Garrison.Example:8443/v1/models", "https://garrison.example:8443"),
        ("https://garrison.example:443/x", "https://garrison.example"),
        ("http://127.0.0.1:80/", "http://127.0.0.1"),
        ("http://[::1]:8080/v1", "http://[::1]:8080"),
    ],
)
def test_origin_is_compared_as_proofs_compare_urls(url: str, expected: str) -> None:
    assert origin(url) == expected


def test_requests_to_the_gateway_are_signed(session_path: Path) -> None:
    seen: list[httpx.Request] = []
    with httpx.Client(auth=DPoPAuth(session_path), transport=_recording_transport(seen)) as c:
        c.get("https://GARRISON.example:8443/v1/models")
    (sent,) = seen
    assert sent.headers["authorization"] == f"DPoP {TOKEN}"
    assert sent.headers["dpop"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/v1/models",
        "https://garrison.example/v1/models",  # another port
        "http://garrison.example:8443/v1/models",  # another scheme
        "https://garrison.example.evil.example:8443/v1/models",
    ],
)
def test_a_request_for_another_origin_is_not_signed(session_path: Path, url: str) -> None:
    seen: list[httpx.Request] = []
    with (
        httpx.Client(auth=DPoPAuth(session_path), transport=_recording_transport(seen)) as c,
        pytest.raises(ForeignOrigin, match="not signing a request for"),
    ):
        c.get(url)
    assert seen == []


def test_a_redirect_to_another_host_does_not_carry_the_token(session_path: Path) -> None:
    # httpx follows redirects below the auth flow and drops Authorization across origins;
    # the proof that goes along names the gateway's URL and is useless without the token.
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "garrison.example":
            return httpx.Response(302, headers={"location": "https://collector.example/grab"})
        return httpx.Response(200)

    with httpx.Client(
        auth=DPoPAuth(session_path), transport=httpx.MockTransport(handle), follow_redirects=True
    ) as c:
        c.get(f"{GATEWAY}/v1/models")
    assert [r.url.host for r in seen] == ["garrison.example", "collector.example"]
    assert "authorization" not in seen[1].headers
    assert TOKEN not in str(seen[1].headers.raw)


def test_origins_named_by_the_caller_are_signed(session_path: Path) -> None:
    seen: list[httpx.Request] = []
    auth = DPoPAuth(session_path, origins=("https://garrison-admin.example",))
    with httpx.Client(auth=auth, transport=_recording_transport(seen)) as c:
        c.get("https://garrison-admin.example/admin/v1/whoami")
        with pytest.raises(ForeignOrigin):
            c.get("https://other.example/admin/v1/whoami")
    assert len(seen) == 1


def test_the_sdk_client_refuses_too(session_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={})

    with (
        http_client(session_path, transport=httpx2.MockTransport(handle)) as client,
        pytest.raises(ForeignOrigin),
    ):
        client.get("https://evil.example/v1/models")
    assert seen == []
