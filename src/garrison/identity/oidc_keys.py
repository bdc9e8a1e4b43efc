"""A provider's discovery document and signing keys (JWKS), with rotation.

Keys are fetched from the ``jwks_uri`` of the provider's discovery document and cached. A
token signed with a ``kid`` the cache does not hold triggers one refetch (the provider has
rotated its keys) — but at most once per ``JWKS_REFETCH_MIN_INTERVAL_S`` per provider, so a
flood of tokens with made-up ``kid`` values cannot turn Garrison into a cannon aimed at the
provider, nor slow sign-ins down. The ``kid`` is only ever a dictionary key here: never a
path, a URL or a query.

The I/O is one injected function (``Fetch``: URL → parsed JSON), so the cache logic is
tested with a plain function and the gateway plugs in ``httpx_fetch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from garrison.errors import UpstreamFailed
from garrison.identity.oidc_config import OidcProvider

# An unknown kid refetches the provider's keys at most this often: a provider publishes a
# new key before signing with it, so one fetch a minute finds it, and a burst of forged kids
# costs the provider one request a minute at most.
JWKS_REFETCH_MIN_INTERVAL_S = 60.0
# Keys are refreshed at least this often even when every kid is known (a key the provider
# withdrew stops verifying within the hour).
JWKS_MAX_AGE_S = 3600.0
# Discovery documents and key sets are a few KB; a provider answering more is refused.
OIDC_DOCUMENT_MAX_BYTES = 256 * 1024
# A provider that does not answer in this long is down for this sign-in.
OIDC_HTTP_TIMEOUT_S = 5.0
# At most this many keys are taken from a key set (real ones hold 2-4).
JWKS_MAX_KEYS = 32

Fetch = Callable[[str], Awaitable[Any]]


class ProviderUnavailable(UpstreamFailed):
    """The identity provider could not be read (discovery or keys)."""

    default_message = "The identity provider could not be reached."


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str | None = None


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _endpoint(doc: dict[str, Any], name: str, issuer: str, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ProviderUnavailable(f"discovery document of {issuer} lacks {name}")
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ProviderUnavailable(f"{name} of {issuer} is not an https URL")
    return value


def parse_discovery(doc: Any, issuer: str) -> ProviderMetadata:
    """The endpoints Garrison uses; the document's issuer must be exactly the configured one
    (OIDC Discovery §4.3: a document naming another issuer is not this provider's)."""
    if not isinstance(doc, dict) or doc.get("issuer") != issuer:
        raise ProviderUnavailable(f"discovery document does not name issuer {issuer}")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=str(_endpoint(doc, "authorization_endpoint", issuer)),
        token_endpoint=str(_endpoint(doc, "token_endpoint", issuer)),
        jwks_uri=str(_endpoint(doc, "jwks_uri", issuer)),
        device_authorization_endpoint=_endpoint(
            doc, "device_authorization_endpoint", issuer, required=False
        ),
    )


def parse_key_set(doc: Any) -> dict[str, Key]:
    """Signing keys by kid; keys for encryption, private keys and symmetric keys are
    dropped (a JWKS that publishes an ``oct`` key must not make HS256 verifiable)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ProviderUnavailable("the provider's key set is not a JWKS document")
    usable: list[dict[str, Any]] = []
    for entry in doc["keys"][:JWKS_MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig" or "d" in entry:
            continue
        usable.append(entry)
    try:
        keys = KeySet.import_key_set({"keys": usable})
    except (JoseError, ValueError, TypeError):
        raise ProviderUnavailable("the provider's key set holds an unreadable key") from None
    return {str(key.kid): key for key in keys}


class ProviderKeys:
    """One provider's metadata and keys, fetched lazily and refetched on rotation."""

    def __init__(self, provider: OidcProvider, fetch: Fetch) -> None:
        self.provider = provider
        self._fetch = fetch
        self._metadata: ProviderMetadata | None = None
        self._keys: dict[str, Key] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0  # key-set fetches made (tests read it)
        self.refetch_interval_s = JWKS_REFETCH_MIN_INTERVAL_S

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            doc = await self._fetch(discovery_url(self.provider.issuer))
            self._metadata = parse_discovery(doc, self.provider.issuer)
        return self._metadata

    async def _refresh(self, now: float) -> None:
        meta = await self.metadata()
        self.fetches += 1
        self._fetched_at = now
        self._keys = parse_key_set(await self._fetch(meta.jwks_uri))

    async def key_for(self, kid: str | None, *, now: float) -> Key | None:
        """The key for ``kid`` (a provider with a single key may omit kid), refetching once
        when it is unknown and the last fetch is older than the refetch interval."""
        async with self._lock:
            if now - self._fetched_at >= JWKS_MAX_AGE_S:
                await self._refresh(now)
            found = self._pick(kid)
            if found is None and now - self._fetched_at >= self.refetch_interval_s:
                await self._refresh(now)
                found = self._pick(kid)
            return found

    def _pick(self, kid: str | None) -> Key | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


async def httpx_fetch(url: str) -> Any:
    """GET ``url`` as JSON: no redirects, bounded size and time. A client per fetch: fetches
    are rare (discovery once, keys hourly or on rotation) and nothing outlives them."""
    body = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=OIDC_HTTP_TIMEOUT_S, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise ProviderUnavailable(f"{url} answered {response.status_code}")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > OIDC_DOCUMENT_MAX_BYTES:
                    raise ProviderUnavailable(f"{url} answered more than the limit")
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(f"{url}: {type(exc).__name__}") from None
    try:
        return orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise ProviderUnavailable(f"{url} answered something that is not JSON") from None
