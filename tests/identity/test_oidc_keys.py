"""The provider's keys: discovery, rotation, and the rate limit on refetching for an unknown
kid (the fetch function is a plain one here; the real provider rotates in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import OctKey, RSAKey

from garrison.identity.oidc_config import OidcProvider
from garrison.identity.oidc_keys import (
    JWKS_MAX_AGE_S,
    JWKS_MAX_KEYS,
    JWKS_REFETCH_MIN_INTERVAL_S,
    ProviderKeys,
    ProviderUnavailable,
    parse_discovery,
    parse_key_set,
)

ISSUER = "https://idp.example.com"
PROVIDER = OidcProvider(issuer=ISSUER, client_id="garrison")


def rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, private=True, parameters={"kid": kid})


class FakeProvider:
    def __init__(self, *keys: RSAKey) -> None:
        self.keys = list(keys)
        self.jwks_fetches = 0

    async def __call__(self, url: str) -> Any:
        if url.endswith("/.well-known/openid-configuration"):
            return {
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/auth",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
            }
        assert url == f"{ISSUER}/jwks"
        self.jwks_fetches += 1
        return {"keys": [k.as_dict(private=False) for k in self.keys]}


async def test_a_rotated_key_is_found_by_one_refetch() -> None:
    idp = FakeProvider(rsa("old"))
    keys = ProviderKeys(PROVIDER, idp)
    assert await keys.key_for("old", now=1000.0) is not None
    idp.keys.insert(0, rsa("new"))
    # Within the refetch interval the new kid is not looked for...
    assert await keys.key_for("new", now=1000.0 + 1) is None
    # ...after it, one refetch finds it.
    later = 1000.0 + JWKS_REFETCH_MIN_INTERVAL_S
    assert await keys.key_for("new", now=later) is not None
    assert idp.jwks_fetches == 2


async def test_a_flood_of_unknown_kids_costs_the_provider_one_fetch_per_interval() -> None:
    idp = FakeProvider(rsa("k1"))
    keys = ProviderKeys(PROVIDER, idp)
    await keys.key_for("k1", now=0.0)
    for i in range(500):
        assert await keys.key_for(f"forged-{i}", now=1.0 + i * 0.01) is None
    assert idp.jwks_fetches == 1
    await keys.key_for("forged", now=JWKS_REFETCH_MIN_INTERVAL_S + 1)
    assert idp.jwks_fetches == 2


async def test_keys_are_refreshed_when_old_even_if_every_kid_is_known() -> None:
    idp = FakeProvider(rsa("k1"))
    keys = ProviderKeys(PROVIDER, idp)
    await keys.key_for("k1", now=0.0)
    idp.keys = [rsa("k2")]  # k1 withdrawn by the provider
    assert await keys.key_for("k1", now=JWKS_MAX_AGE_S + 1) is None
    assert idp.jwks_fetches == 2


async def test_a_token_without_kid_works_only_with_a_single_key() -> None:
    one = ProviderKeys(PROVIDER, FakeProvider(rsa("a")))
    assert await one.key_for(None, now=0.0) is not None
    two = ProviderKeys(PROVIDER, FakeProvider(rsa("a"), rsa("b")))
    assert await two.key_for(None, now=0.0) is None


def test_symmetric_private_and_encryption_keys_are_dropped_from_a_jwks() -> None:
    oct_key = OctKey.generate_key(256, parameters={"kid": "hmac"}).as_dict(private=True)
    private = rsa("priv").as_dict(private=True)
    enc = {**rsa("enc").as_dict(private=False), "use": "enc"}
    good = rsa("good").as_dict(private=False)
    keys = parse_key_set({"keys": [oct_key, private, enc, good]})
    assert set(keys) == {"good"}


def test_a_jwks_is_read_up_to_its_limit() -> None:
    many = [rsa(f"k{i}").as_dict(private=False) for i in range(JWKS_MAX_KEYS + 2)]
    assert len(parse_key_set({"keys": many})) == JWKS_MAX_KEYS


def test_a_discovery_document_for_another_issuer_is_refused() -> None:
    doc = {
        "issuer": "https://evil.example.com",
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
    }
    with pytest.raises(ProviderUnavailable):
        parse_discovery(doc, ISSUER)


def test_plain_http_endpoints_are_refused_off_loopback() -> None:
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": "http://idp.example.com/jwks",
    }
    with pytest.raises(ProviderUnavailable):
        parse_discovery(doc, ISSUER)


async def _serve(handler: Any) -> Any:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_a_provider_document_over_the_limit_is_refused() -> None:
    from aiohttp import web

    from garrison.identity.oidc_keys import OIDC_DOCUMENT_MAX_BYTES, httpx_fetch

    async def big(request: web.Request) -> web.Response:
        size = OIDC_DOCUMENT_MAX_BYTES + (1 if request.path == "/big" else -100)
        return web.Response(body=b'{"x":"' + b"a" * (size - 8) + b'"}')

    runner, base = await _serve(big)
    try:
        assert "x" in await httpx_fetch(f"{base}/small")
        with pytest.raises(ProviderUnavailable, match="limit"):
            await httpx_fetch(f"{base}/big")
    finally:
        await runner.cleanup()


async def test_a_provider_that_redirects_or_fails_is_unavailable() -> None:
    from aiohttp import web

    from garrison.identity.oidc_keys import httpx_fetch

    async def odd(request: web.Request) -> web.Response:
        if request.path == "/redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        return web.Response(status=500)

    runner, base = await _serve(odd)
    try:
        for path in ("/redirect", "/error"):
            with pytest.raises(ProviderUnavailable):
                await httpx_fetch(base + path)
    finally:
        await runner.cleanup()


async def test_a_provider_slower_than_the_timeout_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from aiohttp import web

    from garrison.identity import oidc_keys

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(body=b"{}")

    monkeypatch.setattr(oidc_keys, "OIDC_HTTP_TIMEOUT_S", 0.2)
    runner, base = await _serve(slow)
    try:
        with pytest.raises(ProviderUnavailable, match="Timeout"):
            await oidc_keys.httpx_fetch(base + "/slow")
    finally:
        await runner.cleanup()
