"""Red-team regressions on ``garrison login``'s trust in what the gateway says.

The CLI asks the gateway which providers to use (``GET /auth/v1/providers``): the issuer,
and the name of the environment variable a client secret is read from. A gateway that is not
the real one (a wrong ``--gateway``, or plain http through someone's proxy) chose both: it
named any variable (``AWS_SECRET_ACCESS_KEY``) and an issuer of its own, and the CLI posted
that variable's value there; on ``--refresh`` it sent the stored refresh token to whatever
issuer the gateway named now. Both run here against loopback servers standing in for the
gateway and the provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from garrison.identity.client_session import ClientSession, save_session
from garrison.identity.dpop import generate_proof_key
from garrison.identity.oidc_login import LoginFailed, ProviderInfo, login, save_idp_session

SECRET = "s3cret-value-of-another-tool"
REFRESH = "rt-stored-refresh-token"


class Loopback:
    """A fake gateway and provider on one loopback server; records what the provider got."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.secret_env = "AWS_SECRET_ACCESS_KEY"
        self.base = ""
        self.runner: web.AppRunner | None = None

    async def start(self) -> Loopback:
        app = web.Application()
        app.router.add_get("/auth/v1/providers", self._providers)
        app.router.add_get("/idp/.well-known/openid-configuration", self._discovery)
        app.router.add_post("/idp/device", self._record)
        app.router.add_post("/idp/token", self._record)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def _providers(self, request: web.Request) -> web.Response:
        provider = {
            "name": "default",
            "issuer": f"{self.base}/idp",
            "client_id": "garrison-cli",
            "scopes": ["openid"],
            "client_secret_env": self.secret_env,
            "vendor": None,
        }
        return web.json_response({"token_endpoint": None, "providers": [provider]})

    async def _discovery(self, request: web.Request) -> web.Response:
        issuer = f"{self.base}/idp"
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/auth",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "device_authorization_endpoint": f"{issuer}/device",
            }
        )

    async def _record(self, request: web.Request) -> web.Response:
        self.received.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response({"error": "access_denied"}, status=400)


@pytest.fixture
async def fake() -> AsyncIterator[Loopback]:
    server = await Loopback().start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def _login(fake: Loopback, tmp_path: Path, **kw: Any) -> Any:
    return login(
        fake.base,
        session_path=tmp_path / "session.json",
        say=lambda _text: None,
        timeout_s=5,
        **kw,
    )


async def test_the_gateway_cannot_name_any_environment_variable_as_the_client_secret(
    fake: Loopback, tmp_path: Path
) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": SECRET}
    with pytest.raises(LoginFailed, match="GARRISON_"):
        await asyncio.to_thread(_login, fake, tmp_path, device=True, env=env)
    assert not any(SECRET in str(form) for form in fake.received), fake.received


async def test_a_garrison_variable_is_still_read(fake: Loopback, tmp_path: Path) -> None:
    fake.secret_env = "GARRISON_OIDC_SECRET"
    env = {"GARRISON_OIDC_SECRET": SECRET}
    with pytest.raises(LoginFailed, match="refused"):
        await asyncio.to_thread(_login, fake, tmp_path, device=True, env=env)
    assert fake.received and fake.received[0]["client_secret"] == SECRET


async def test_refresh_sends_the_refresh_token_only_to_the_provider_that_issued_it(
    fake: Loopback, tmp_path: Path
) -> None:
    fake.secret_env = None  # type: ignore[assignment]
    # What an earlier `garrison login` left: a provider session at another issuer.
    original = ProviderInfo(
        name="default",
        issuer="https://idp.example.org",
        client_id="garrison-cli",
        scopes=("openid",),
        client_secret_env=None,
    )
    save_idp_session(tmp_path / "idp-session.json", original, REFRESH)
    key = generate_proof_key()
    save_session(
        ClientSession("old-token", 0.0, key.as_dict(private=True), fake.base),
        tmp_path / "session.json",
    )
    with pytest.raises(LoginFailed, match="issuer"):
        await asyncio.to_thread(_login, fake, tmp_path, refresh=True, env={})
    assert not any(REFRESH in str(form) for form in fake.received), fake.received


def test_the_configuration_names_only_a_garrison_variable() -> None:
    from garrison.errors import ConfigError
    from garrison.identity.oidc_config import parse_oidc

    table = {"issuer": "https://idp.example.com", "client_id": "c"}
    with pytest.raises(ConfigError, match="GARRISON_"):
        parse_oidc({**table, "client_secret_env": "AWS_SECRET_ACCESS_KEY"}, "garrison.toml")
    parsed = parse_oidc({**table, "client_secret_env": "GARRISON_OIDC_SECRET"}, "garrison.toml")
    assert parsed.providers[0].client_secret_env == "GARRISON_OIDC_SECRET"


@pytest.mark.parametrize(
    "url", ["http://0.0.0.0:9", "ftp://127.0.0.1", "http://user:pw@127.0.0.1:9"]
)
def test_sign_in_refuses_plain_http_off_loopback(url: str, tmp_path: Path) -> None:
    """The enrollment code and the ID token went in clear text to any http:// gateway."""
    with pytest.raises(LoginFailed, match="https://"):
        login(url, session_path=tmp_path / "s.json", say=lambda _t: None, env={}, timeout_s=2)
