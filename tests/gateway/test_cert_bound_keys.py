"""Service-account keys bound to a client certificate (RFC 8705 style), over real TLS: the
key is made through the admin API with the certificate's thumbprint; the real ``openai``
client calls with the key *and* the certificate; the same key without the certificate, or
with another one, is refused (401, audited with its reason, never forwarded). Unbound keys
are unaffected, with or without a certificate."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import openai
import pytest

from garrison.errors import BadRequest
from garrison.identity.cert_binding import THUMBPRINT_CHARS, thumbprint
from garrison.identity.keys import parse_key
from tests.support.admin import admin_call
from tests.support.certs import Ca, der, issue, make_ca
from tests.support.mtls import bound_service_key, denied_reasons, restart_over_tls
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

USER: list[Any] = [{"role": "user", "content": "hello over mTLS"}]


@dataclass(frozen=True)
class Client:
    """A client certificate and its key, as files on the caller's machine."""

    cert: Path
    key: Path
    thumbprint: str


@dataclass
class Scene:
    world: World
    server_ca: Ca
    good: Client  # issued by the clients' CA: the one the key is bound to
    other: Client  # issued by the same CA, another certificate
    stranger: Client  # issued by a CA the gateway does not trust
    bound_key: str
    bound_id: str
    unbound_key: str

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.world.gateway.port}"

    def context(self, client: Client | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server_ca.file))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def openai(self, key: str, client: Client | None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.base}/v1",
            api_key=key,
            max_retries=0,
            http_client=httpx2.AsyncClient(verify=self.context(client)),
        )


def _client(ca: Ca, where: Path, name: str) -> Client:
    where.mkdir(parents=True, exist_ok=True)
    cert, key = where / f"{name}.pem", where / f"{name}-key.pem"
    return Client(cert, key, thumbprint(der(issue(ca, cert, key, name=name, client=True))))


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    world = await start_world(tmp_path / "w")
    try:
        pki = tmp_path / "pki"
        clients_ca = make_ca(pki, "clients-ca")
        good = _client(clients_ca, pki / "good", "batch-a")
        other = _client(clients_ca, pki / "other", "batch-b")
        # The same name as the bound certificate, from a CA the gateway does not trust.
        stranger = _client(make_ca(pki, "stranger-ca"), pki / "stranger", "batch-a")
        # Set-up through the admin API (plain HTTP, before TLS is turned on).
        bound = await bound_service_key(world, "batch", good.thumbprint, clearance="internal")
        assert bound["cert_thumbprint"] == good.thumbprint
        status, unbound = await admin_call(
            world, world.admin_key, "POST", "/keys", {"principal": "batch"}
        )
        assert status == 201, unbound
        server_ca = await restart_over_tls(world, pki, clients_ca)
        yield Scene(
            world, server_ca, good, other, stranger, bound["key"], bound["id"], unbound["key"]
        )
    finally:
        await stop_world(world)


async def _chat(scene: Scene, key: str, client: Client | None) -> str | None:
    async with scene.openai(key, client) as sdk:
        answer = await sdk.chat.completions.create(model="assistant", messages=USER)
    return answer.choices[0].message.content


async def test_a_bound_key_with_its_certificate_calls_through_the_openai_client(
    scene: Scene,
) -> None:
    assert await _chat(scene, scene.bound_key, scene.good)
    await scene.world.settle()
    (allowed,) = [
        e for e in scene.world.events("request.allowed") if e["credential_id"] == scene.bound_id
    ]
    assert allowed["model"] == "assistant"


@pytest.mark.parametrize(
    ("holder", "reason"),
    [(None, "credential.cert_missing"), ("other", "credential.cert_mismatch")],
)
async def test_a_bound_key_without_its_certificate_is_refused_and_never_forwarded(
    scene: Scene, holder: str | None, reason: str
) -> None:
    client = None if holder is None else getattr(scene, holder)
    before = len(scene.world.mock.seen)
    with pytest.raises(openai.AuthenticationError) as refused:
        await _chat(scene, scene.bound_key, client)
    assert refused.value.status_code == 401
    # The same answer an unknown key gets: the caller learns nothing about the binding.
    body: Any = refused.value.body
    assert body["code"] == "invalid_api_key"
    assert len(scene.world.mock.seen) == before
    assert [reason] in await denied_reasons(scene.world, "request.denied")
    await scene.world.settle()
    (event,) = [e for e in scene.world.events("request.denied") if e["data"]["reasons"] == [reason]]
    # Attributed: the secret was right, so the key (copied) is named.
    assert event["credential_id"] == scene.bound_id
    assert scene.bound_key not in scene.world.raw_audit().decode()


async def test_a_certificate_from_an_untrusted_ca_fails_the_handshake(scene: Scene) -> None:
    # The same subject as the bound certificate, from another CA: refused by TLS itself.
    before = len(scene.world.mock.seen)
    with pytest.raises(openai.APIConnectionError):
        await _chat(scene, scene.bound_key, scene.stranger)
    assert len(scene.world.mock.seen) == before


@pytest.mark.parametrize("holder", [None, "good", "other"])
async def test_unbound_keys_work_with_or_without_a_certificate(
    scene: Scene, holder: str | None
) -> None:
    client = None if holder is None else getattr(scene, holder)
    assert await _chat(scene, scene.unbound_key, client)
    assert await _chat(scene, scene.world.keys["alice"], client)


async def _admin_get(
    scene: Scene, path: str, key: str, client: Client | None = None, **params: str
) -> tuple[int, Any]:
    # The admin API is on the TLS listener now.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{scene.base}/admin/v1{path}",
            params=params,
            headers={"authorization": f"Bearer {key}"},
            ssl=scene.context(client),
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_listings_show_the_thumbprint_and_never_the_secret(scene: Scene) -> None:
    status, listed = await _admin_get(scene, "/keys", scene.world.admin_key, principal="batch")
    assert status == 200
    keys = {k["id"]: k for k in listed}
    assert keys[scene.bound_id]["cert_thumbprint"] == scene.good.thumbprint
    assert [k["cert_thumbprint"] for i, k in keys.items() if i != scene.bound_id] == [None]
    # The secret is everything after the key id (base64url: it may hold "_" itself).
    parsed = parse_key(scene.bound_key)
    assert parsed is not None
    assert parsed.secret.reveal() not in str(listed)
    status, report = await _admin_get(scene, "/principals/batch", scene.world.admin_key)
    assert status == 200
    shown = {k["id"]: k["cert_thumbprint"] for k in report["keys"]}
    assert shown[scene.bound_id] == scene.good.thumbprint


async def test_the_admin_api_holds_a_bound_key_to_its_certificate_too(scene: Scene) -> None:
    # With its certificate the key authenticates (and, holding no admin role, is refused
    # the admin API: 403); without it, it does not authenticate at all (401).
    status, body = await _admin_get(scene, "/whoami", scene.bound_key, scene.good)
    assert status == 403, body
    status, body = await _admin_get(scene, "/whoami", scene.bound_key)
    assert status == 401, body
    await scene.world.settle()
    assert any(
        e["data"]["reasons"] == ["credential.cert_missing"]
        for e in scene.world.events("admin.denied")
    )


async def test_rotation_keeps_the_binding(scene: Scene) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{scene.base}/admin/v1/keys/{scene.bound_id}/rotate",
            json={"reason": "routine"},
            headers={"authorization": f"Bearer {scene.world.admin_key}"},
            ssl=scene.context(None),
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        successor = await resp.json()
    _status, listed = await _admin_get(scene, "/keys", scene.world.admin_key, principal="batch")
    assert {k["id"]: k for k in listed}[successor["id"]]["cert_thumbprint"] == (
        scene.good.thumbprint
    )
    with pytest.raises(openai.AuthenticationError):
        await _chat(scene, successor["key"], None)
    assert await _chat(scene, successor["key"], scene.good)


async def test_only_a_service_account_key_is_bound(world: World) -> None:
    thumb = "A" * THUMBPRINT_CHARS
    # An admin asking for a person's key (bound or not) is refused: people enroll.
    status, body = await admin_call(
        world, world.admin_key, "POST", "/keys", {"principal": "carol", "cert_thumbprint": thumb}
    )
    assert status == 403, body
    # A person's own key takes no binding (people sign in; their tokens are DPoP-bound).
    status, body = await admin_call(
        world, world.keys["carol"], "POST", "/keys/self", {"cert_thumbprint": thumb}
    )
    assert status in (400, 422), body
    # A thumbprint that is not an x5t#S256.
    status, made = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": "batch", "org": "internal", "kind": "service"},
    )
    assert status == 201, made
    for bad in ("A" * 42, "A" * 44, "+" * 43, "a" * 64):
        status, body = await admin_call(
            world, world.admin_key, "POST", "/keys", {"principal": "batch", "cert_thumbprint": bad}
        )
        assert status in (400, 422), (bad, body)


def test_the_directory_refuses_to_bind_a_person_key(world: World) -> None:
    with pytest.raises(BadRequest, match="only a service account"):
        world.directory.create_key("carol", now=time.time(), cert_thumbprint="A" * 43)


async def test_a_bound_key_used_without_its_certificate_raises_one_alert(scene: Scene) -> None:
    """The leaked-key signal (detector ``cert_binding``, rule key-cert-binding-violation):
    the copied key's retries are one leak, so one alert for the key."""
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            await _chat(scene, scene.bound_key, None)
    with pytest.raises(openai.AuthenticationError):
        await _chat(scene, scene.bound_key, scene.other)
    deadline = time.monotonic() + 15
    raised: list[dict[str, Any]] = []
    while not raised and time.monotonic() < deadline:
        status, alerts = await _admin_get(scene, "/alerts", scene.world.admin_key)
        assert status == 200, alerts
        raised = [a for a in alerts if a["rule_id"] == "key-cert-binding-violation"]
        if not raised:
            await asyncio.sleep(0.1)
    assert len(raised) == 1, raised
    (alert,) = raised
    assert alert["reason"] == "detect.cert_binding_violation"
    assert alert["severity"] == "high"
    assert scene.bound_id in str(alert["subject"])
    assert scene.bound_key not in str(alerts)
