"""Call Garrison with the signed-in session: every request carries the DPoP-bound token and a
fresh proof signed with the key that never leaves this machine.

One line for the ``openai`` and ``anthropic`` clients (both take an ``http_client``)::

    import garrison.client, openai
    client = openai.OpenAI(base_url=garrison.client.base_url("/v1"), api_key="garrison",
                           http_client=garrison.client.http_client())

The ``api_key`` only satisfies the SDK: the auth below replaces its header (and drops
``x-api-key``), so nothing but the bound token and its proof leave the process. It signs
only requests for the session's gateway (and origins the caller names, such as a separate
admin listener): a request for any other origin — a mistyped or injected base URL, a client
shared with another service — raises ``ForeignOrigin`` before the token is attached.
(Redirects are followed below the auth: ``httpx`` drops ``Authorization`` when one leaves the
origin.) The session is ``garrison login``'s file (``garrison.identity.client_session``);
when its token has expired it is read again (a login in another terminal refreshes running
clients).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import httpx

from garrison.errors import ConfigError
from garrison.identity.client_session import ClientSession, load_session
from garrison.identity.dpop import make_proof, normalize_htu
from garrison.identity.token_auth import DPOP_HEADER

try:  # the openai and anthropic SDKs of this generation build on httpx2
    import httpx2

    HAS_HTTPX2 = True
except ImportError:  # pragma: no cover - httpx2 comes with those SDKs
    HAS_HTTPX2 = False


class SessionExpired(ConfigError):
    """The stored token has expired and no newer session is on disk."""


class ForeignOrigin(ConfigError):
    """A request for an origin the session's token is not meant for: not signed."""


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL, as proofs compare it (lower-case, the
    default port dropped); ValueError for anything else."""
    normal = normalize_htu(url)
    scheme, _, rest = normal.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


class _Signer:
    """Headers for one request: ``Authorization: DPoP <token>`` and a fresh proof, for the
    session's gateway and ``origins`` only."""

    def __init__(
        self,
        session_path: Path | None = None,
        *,
        origins: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = session_path
        self._clock = clock
        self._lock = threading.Lock()
        self._origins = frozenset(origin(o) for o in origins)
        self._load()

    def _check_origin(self, url: str) -> None:
        try:
            wanted = origin(url)
        except ValueError:
            wanted = None
        allowed = self._origins | {origin(self.session.gateway_url)}
        if wanted not in allowed:
            raise ForeignOrigin(
                f"not signing a request for {wanted or url!r}: this session's token goes "
                f"only to {', '.join(sorted(allowed))}"
            )

    def _load(self) -> None:
        session = load_session(self._path)
        self.session: ClientSession = session
        self._key = session.proof_key()

    def headers(self, method: str, url: str) -> dict[str, str]:
        now = self._clock()
        with self._lock:
            if self.session.expired(now):
                self._load()
                if self.session.expired(now):
                    raise SessionExpired("your Garrison session has expired: run `garrison login`")
            self._check_origin(url)
            token = self.session.access_token
            key = self._key
        proof = make_proof(key, method=method, url=url, now=now, access_token=token)
        return {"Authorization": f"DPoP {token}", DPOP_HEADER: proof}


class DPoPAuth(httpx.Auth):
    """``httpx`` auth that signs each request with the session's DPoP key."""

    def __init__(self, session_path: Path | None = None, **kw: Any) -> None:
        self.signer = _Signer(session_path, **kw)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self.signer.headers(request.method, str(request.url)))
        if "x-api-key" in request.headers:
            del request.headers["x-api-key"]
        yield request


def base_url(suffix: str = "", session_path: Path | None = None) -> str:
    """The gateway URL the session signed in to, plus ``suffix`` (``"/v1"`` for openai)."""
    return load_session(session_path).gateway_url.rstrip("/") + suffix


if HAS_HTTPX2:

    class DPoPAuth2(httpx2.Auth):
        """The same auth for ``httpx2`` clients (what the current SDKs take)."""

        def __init__(self, session_path: Path | None = None, **kw: Any) -> None:
            self.signer = _Signer(session_path, **kw)

        def auth_flow(
            self, request: httpx2.Request
        ) -> Generator[httpx2.Request, httpx2.Response, None]:
            request.headers.update(self.signer.headers(request.method, str(request.url)))
            if "x-api-key" in request.headers:
                del request.headers["x-api-key"]
            yield request


def http_client(
    session_path: Path | None = None, *, origins: tuple[str, ...] = (), **kw: Any
) -> Any:
    """An HTTP client for an SDK's ``http_client=``: ``httpx2.Client`` when installed (the
    openai and anthropic SDKs take it), else ``httpx.Client``. It signs for the session's
    gateway and ``origins`` only. ``kw`` goes to the client."""
    if HAS_HTTPX2:
        return httpx2.Client(auth=DPoPAuth2(session_path, origins=origins), **kw)
    return httpx.Client(auth=DPoPAuth(session_path, origins=origins), **kw)  # pragma: no cover


def async_http_client(
    session_path: Path | None = None, *, origins: tuple[str, ...] = (), **kw: Any
) -> Any:
    """The same for ``AsyncOpenAI`` / ``AsyncAnthropic``."""
    if HAS_HTTPX2:
        return httpx2.AsyncClient(auth=DPoPAuth2(session_path, origins=origins), **kw)
    auth = DPoPAuth(session_path, origins=origins)  # pragma: no cover
    return httpx.AsyncClient(auth=auth, **kw)  # pragma: no cover
