"""The CLI's side of signing in: the provider's flows, then Garrison's token exchange.

Two ways to get an ID token from the provider (its endpoints from its discovery document):

* authorization code with PKCE (RFC 7636) through a loopback redirect (RFC 8252 §7.3): a
  one-shot HTTP listener on 127.0.0.1 at a random port receives the provider's redirect; the
  browser is opened on the authorization URL (and the URL printed, for another browser);
* the device authorization grant (RFC 8628) for machines without a browser: the person
  opens the printed URL anywhere and types the code; the CLI polls.

Either way the CLI first makes a new DPoP key pair and asks the provider for nonce
``<jkt>.<random>``, so the ID token names the key that will exchange it. The exchange
(``POST /auth/v1/token`` with a DPoP proof) returns Garrison's access token, stored with the
private key in the session file (0600, ``garrison.identity.client_session``). The provider's
refresh token, when it gives one, is kept beside it (``idp-session.json``, 0600) so
``garrison login --refresh`` gets a fresh ID token without the browser.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import ipaddress
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from garrison.errors import ConfigError, GarrisonError
from garrison.identity.client_session import ClientSession, default_session_path, save_session
from garrison.identity.dpop import generate_proof_key, make_proof, proof_key_thumbprint
from garrison.identity.oidc_config import CLIENT_SECRET_ENV_PREFIX
from garrison.identity.oidc_keys import OIDC_HTTP_TIMEOUT_S, ProviderMetadata, parse_discovery
from garrison.private_files import write_private_bytes

# How long the CLI waits for the person to finish at the provider (browser or device).
LOGIN_TIMEOUT_S = 300.0
# RFC 8628 §3.5: poll no faster than the provider asks; 5 s when it does not say, and 5 s
# more each time it answers slow_down.
DEVICE_POLL_DEFAULT_S = 5.0
DEVICE_SLOW_DOWN_S = 5.0
# 32 random bytes → a 43-character PKCE verifier (RFC 7636 allows 43-128).
PKCE_VERIFIER_BYTES = 32
# The loopback listener reads at most this much of the redirect request line.
CALLBACK_MAX_BYTES = 8192
IDP_SESSION_FILE = "idp-session.json"


class LoginFailed(GarrisonError):
    """Signing in did not complete; the message says why (never a token)."""

    status = 400
    code = "login_failed"


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    issuer: str
    client_id: str
    scopes: tuple[str, ...]
    client_secret_env: str | None = None


@dataclass(frozen=True, slots=True)
class Tokens:
    id_token: str
    refresh_token: str | None


def pkce_pair() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(PKCE_VERIFIER_BYTES)).rstrip(b"=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
    return verifier.decode(), challenge.decode()


def new_nonce(jkt: str) -> str:
    return f"{jkt}.{secrets.token_urlsafe(16)}"


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise LoginFailed(f"{what} answered {response.status_code} without JSON") from None


def fetch_providers(client: httpx.Client, gateway_url: str) -> list[ProviderInfo]:
    return fetch_signin_info(client, gateway_url)[0]


def fetch_signin_info(
    client: httpx.Client, admin_url: str
) -> tuple[list[ProviderInfo], str | None]:
    """The providers the admin API at ``admin_url`` signs people in through, and the data
    plane's URL it announces (None from a gateway that does not say)."""
    response = client.get(f"{admin_url}/auth/v1/providers")
    if response.status_code == 404:
        raise LoginFailed("this gateway does not offer sign-in (no [identity.oidc] configured)")
    body = _json(response, "the gateway")
    announced = body.get("gateway_url") if isinstance(body, dict) else None
    providers = [
        ProviderInfo(
            name=p["name"],
            issuer=p["issuer"],
            client_id=p["client_id"],
            scopes=tuple(p["scopes"]),
            client_secret_env=p.get("client_secret_env"),
        )
        for p in body.get("providers", [])
    ]
    return providers, announced.rstrip("/") if isinstance(announced, str) and announced else None


def choose_provider(providers: list[ProviderInfo], name: str | None) -> ProviderInfo:
    if not providers:
        raise LoginFailed("this gateway has no identity provider configured")
    wanted = name or "default"
    for provider in providers:
        if provider.name == wanted:
            return provider
    if name is None and len(providers) == 1:
        return providers[0]
    names = ", ".join(p.name for p in providers)
    raise LoginFailed(f"no provider named {wanted!r}; this gateway has: {names} (--provider)")


def discover(client: httpx.Client, issuer: str) -> ProviderMetadata:
    response = client.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
    return parse_discovery(_json(response, "the provider's discovery document"), issuer)


def _client_auth(provider: ProviderInfo, env: Mapping[str, str]) -> dict[str, str]:
    params = {"client_id": provider.client_id}
    if provider.client_secret_env:
        # The gateway names the variable: only one of Garrison's own is read, never another
        # tool's secret (a wrong or spoofed gateway would otherwise collect it).
        if not provider.client_secret_env.startswith(CLIENT_SECRET_ENV_PREFIX):
            raise LoginFailed(
                f"the gateway names {provider.client_secret_env!r} as the client secret's "
                f"variable; only {CLIENT_SECRET_ENV_PREFIX}* variables are read"
            )
        secret = env.get(provider.client_secret_env)
        if not secret:
            raise LoginFailed(
                f"the provider needs a client secret: set {provider.client_secret_env}"
            )
        params["client_secret"] = secret
    return params


def _token_answer(response: httpx.Response) -> Tokens:
    body = _json(response, "the provider's token endpoint")
    if response.status_code != 200 or not isinstance(body.get("id_token"), str):
        error = body.get("error", "no id_token") if isinstance(body, dict) else "no id_token"
        raise LoginFailed(f"the provider refused the sign-in: {error}")
    refresh = body.get("refresh_token")
    return Tokens(body["id_token"], refresh if isinstance(refresh, str) else None)


class _Callback(http.server.BaseHTTPRequestHandler):
    # Where the redirect's query goes (a fresh dict per sign-in, set on a subclass).
    sink: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        query = {k: v[0] for k, v in parse_qs(parts.query[:CALLBACK_MAX_BYTES]).items()}
        self.sink.update(query or {"error": "empty_redirect"})
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"<p>Garrison: signed in at the provider. You can close this tab.</p>")

    def log_message(self, format: str, *args: Any) -> None:
        return  # the query holds the code: never logged


def browser_login(
    client: httpx.Client,
    provider: ProviderInfo,
    meta: ProviderMetadata,
    *,
    nonce: str,
    open_browser: Callable[[str], Any],
    say: Callable[[str], None],
    max_age: int | None = None,
    env: Mapping[str, str] = os.environ,
    timeout_s: float = LOGIN_TIMEOUT_S,
) -> Tokens:
    """Authorization code + PKCE through a one-shot loopback listener."""
    answer: dict[str, str] = {}
    handler = type("Callback", (_Callback,), {"sink": answer})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 0.5
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(provider.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if max_age is not None:
        params["max_age"] = str(max_age)
        if max_age == 0:
            params["prompt"] = "login"
    url = f"{meta.authorization_endpoint}?{urlencode(params)}"
    say(f"Opening the identity provider in your browser. If it does not open, visit:\n{url}")
    deadline = time.monotonic() + timeout_s
    try:
        threading.Thread(target=open_browser, args=(url,), daemon=True).start()
        while not answer:
            if time.monotonic() > deadline:
                raise LoginFailed("timed out waiting for the provider's redirect")
            server.handle_request()
    finally:
        server.server_close()
    if answer.get("state") != state:
        raise LoginFailed("the provider's redirect carried the wrong state (not this sign-in)")
    if "error" in answer or "code" not in answer:
        raise LoginFailed(f"the provider refused the sign-in: {answer.get('error', 'no code')}")
    if answer.get("iss") not in (None, provider.issuer):
        raise LoginFailed("the redirect came from another provider (RFC 9207 iss mismatch)")
    response = client.post(
        meta.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            **_client_auth(provider, env),
        },
    )
    return _token_answer(response)


def device_login(
    client: httpx.Client,
    provider: ProviderInfo,
    meta: ProviderMetadata,
    *,
    nonce: str,
    say: Callable[[str], None],
    max_age: int | None = None,
    env: Mapping[str, str] = os.environ,
    timeout_s: float = LOGIN_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Tokens:
    """The device authorization grant (RFC 8628)."""
    if meta.device_authorization_endpoint is None:
        raise LoginFailed("this provider does not offer the device flow; sign in without --device")
    data = {"scope": " ".join(provider.scopes), "nonce": nonce, **_client_auth(provider, env)}
    if max_age is not None:
        data["max_age"] = str(max_age)
    start = _json(client.post(meta.device_authorization_endpoint, data=data), "device auth")
    if "device_code" not in start:
        raise LoginFailed(f"the provider refused the device flow: {start.get('error', '?')}")
    uri = start.get("verification_uri_complete") or start.get("verification_uri")
    say(f"To sign in, open {uri} and enter the code {start.get('user_code')}")
    interval = float(start.get("interval") or DEVICE_POLL_DEFAULT_S)
    deadline = time.monotonic() + min(timeout_s, float(start.get("expires_in") or timeout_s))
    while time.monotonic() < deadline:
        sleep(interval)
        response = client.post(
            meta.token_endpoint,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": start["device_code"],
                **_client_auth(provider, env),
            },
        )
        body = _json(response, "the provider's token endpoint")
        error = body.get("error") if response.status_code != 200 else None
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += DEVICE_SLOW_DOWN_S
            continue
        return _token_answer(response)
    raise LoginFailed("timed out waiting for the sign-in on the other device")


def refresh_id_token(
    client: httpx.Client,
    provider: ProviderInfo,
    meta: ProviderMetadata,
    refresh_token: str,
    env: Mapping[str, str] = os.environ,
) -> Tokens:
    response = client.post(
        meta.token_endpoint,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            **_client_auth(provider, env),
        },
    )
    tokens = _token_answer(response)
    return Tokens(tokens.id_token, tokens.refresh_token or refresh_token)


def exchange(
    client: httpx.Client,
    gateway_url: str,
    id_token: str,
    key: Any,
    *,
    enrollment_code: str | None = None,
) -> dict[str, Any]:
    """Garrison's token exchange with a DPoP proof by ``key``."""
    url = f"{gateway_url}/auth/v1/token"
    proof = make_proof(key, method="POST", url=url, now=time.time())
    body: dict[str, Any] = {"id_token": id_token}
    if enrollment_code:
        body["enrollment_code"] = enrollment_code
    response = client.post(url, json=body, headers={"DPoP": proof})
    answer = _json(response, "the gateway")
    if response.status_code != 200:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        raise LoginFailed(f"Garrison refused the sign-in: {message or response.status_code}")
    return dict(answer)


def idp_session_path(session_path: Path | None = None) -> Path:
    return (session_path or default_session_path()).with_name(IDP_SESSION_FILE)


def save_idp_session(path: Path, provider: ProviderInfo, refresh_token: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"provider": provider.name, "issuer": provider.issuer, "refresh_token": refresh_token}
    tmp = path.with_name(path.name + ".new")
    write_private_bytes(tmp, json.dumps(data).encode())
    os.replace(tmp, path)


def load_idp_session(path: Path) -> dict[str, str]:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise LoginFailed("no provider session to refresh: run `garrison login`") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others: run `chmod 600 {path}`")
    data = json.loads(path.read_bytes())
    if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
        raise LoginFailed(f"{path} is not a provider session: run `garrison login`")
    return data


def check_gateway_transport(gateway_url: str) -> None:
    """Sign-in sends the enrollment code, the ID token and the provider list's answer
    decides where secrets go: only over TLS, or to this host's loopback."""
    parts = urlsplit(gateway_url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a name (other than localhost) may resolve anywhere
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        raise LoginFailed("the gateway URL must be https:// (plain http:// only on loopback)")
    if parts.scheme == "http" and not loopback:
        raise LoginFailed(
            f"refusing to sign in over plain http to {host}: the enrollment code and the ID "
            "token would travel in clear text; use https://"
        )


def login(
    admin_url: str,
    *,
    gateway_url: str | None = None,
    provider_name: str | None = None,
    device: bool = False,
    refresh: bool = False,
    enrollment_code: str | None = None,
    max_age: int | None = None,
    session_path: Path | None = None,
    open_browser: Callable[[str], Any] | None = None,
    say: Callable[[str], None] = print,
    env: Mapping[str, str] = os.environ,
    timeout_s: float = LOGIN_TIMEOUT_S,
    local_address: str | None = None,
) -> dict[str, Any]:
    """Sign in at the admin API ``admin_url`` and store the session; returns the gateway's
    answer without the token. ``gateway_url``: the data plane the session calls models at
    (default: the one the admin API announces, else ``admin_url``: one listener for both).
    ``local_address``: the source address to connect from (tests: a machine of its own)."""
    import webbrowser

    admin_url = admin_url.rstrip("/")
    check_gateway_transport(admin_url)
    if gateway_url is not None:
        gateway_url = gateway_url.rstrip("/")
        check_gateway_transport(gateway_url)
    key = generate_proof_key()
    nonce = new_nonce(proof_key_thumbprint(key))
    idp_path = idp_session_path(session_path)
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    with httpx.Client(
        timeout=OIDC_HTTP_TIMEOUT_S, follow_redirects=False, transport=transport
    ) as client:
        stored = load_idp_session(idp_path) if refresh else None
        providers, announced = fetch_signin_info(client, admin_url)
        provider = choose_provider(providers, stored["provider"] if stored else provider_name)
        if gateway_url is None:
            gateway_url = announced or admin_url
            check_gateway_transport(gateway_url)
        meta = discover(client, provider.issuer)
        if stored is not None:
            # A refreshed ID token keeps the nonce of the first sign-in, which names the
            # key stored with the session: the refresh is exchanged with that same key.
            from garrison.identity.client_session import load_session

            if provider.issuer != stored.get("issuer"):
                # The refresh token goes only to the provider that issued it, whatever
                # issuer the gateway names today.
                raise LoginFailed(
                    f"the gateway now names issuer {provider.issuer}, not the one this "
                    f"provider session is from ({stored.get('issuer')}): run `garrison login`"
                )
            key = load_session(session_path).proof_key()
            tokens = refresh_id_token(client, provider, meta, stored["refresh_token"], env)
        elif device:
            tokens = device_login(
                client,
                provider,
                meta,
                nonce=nonce,
                say=say,
                max_age=max_age,
                env=env,
                timeout_s=timeout_s,
            )
        else:
            tokens = browser_login(
                client,
                provider,
                meta,
                nonce=nonce,
                say=say,
                max_age=max_age,
                env=env,
                open_browser=open_browser or webbrowser.open,
                timeout_s=timeout_s,
            )
        answer = exchange(client, admin_url, tokens.id_token, key, enrollment_code=enrollment_code)
    path = save_session(
        ClientSession(
            access_token=answer["access_token"],
            expires_at=time.time() + float(answer["expires_in"]),
            dpop_private_jwk=key.as_dict(private=True),
            gateway_url=gateway_url,
            admin_url=admin_url,
        ),
        session_path,
    )
    if tokens.refresh_token:
        save_idp_session(idp_path, provider, tokens.refresh_token)
    public = {k: v for k, v in answer.items() if k != "access_token"}
    return {**public, "provider": provider.name, "session_file": str(path)}


def logout(session_path: Path | None = None) -> list[str]:
    """Delete the session file and the provider session; returns what was removed."""
    from garrison.identity.client_session import delete_session

    removed = []
    path = session_path or default_session_path()
    if delete_session(path):
        removed.append(str(path))
    idp = idp_session_path(path)
    if idp.exists():
        idp.unlink()
        removed.append(str(idp))
    return removed
