"""DPoP proofs (RFC 9449): every call proves possession of the key its token is bound to.

A proof is a JWT the client signs for one request with the private key it generated at
sign-in (the key never leaves the client). Its header carries the public key (``jwk``); its
claims name the request (``htm`` method, ``htu`` URL), when it was made (``iat``), a unique
``jti`` and, with a token, ``ath`` = base64url(SHA-256(token)). ``verify_proof`` checks all of
it and returns the key's RFC 7638 thumbprint, which the caller compares with the token's
``cnf.jkt``. All JOSE parsing and signature checks are joserfc's.

The URL a proof must name is built by the caller from the configured ``public_url`` and the
request path, never from the Host header (behind a load balancer that header is whatever
the client sent). Query and fragment are not compared (RFC 9449 section 4.3).

Replay: a ``jti`` is accepted once per key within the proof window. ``ReplayCache`` is the
store; ``MemoryReplayCache`` serves one process (bounded; when full of unexpired entries it
refuses rather than forget one, which would reopen replay). Several replicas share one
store (``garrison.shared.redis_replay``: Redis ``SET NX PX`` behind the same protocol); when
it cannot be asked, the verdict is UNAVAILABLE and the proof is refused (fail closed). The
data plane checks a proof against its own process's cache here and records the jti in the
shared store with its one admission round trip (``check_proof`` hands back what to record).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import heapq
import hmac
import math
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry

from garrison.domain import Reason
from garrison.identity.access_tokens import InvalidToken

# Algorithms a client may sign proofs with: ES256 (what most DPoP clients use, and the
# fastest asymmetric check measured here) and Ed25519 (RFC 9864's name for EdDSA on
# Ed25519). Never "none", never HS* (a proof must be verifiable from its public key alone).
# The deprecated name "EdDSA" is not taken (joserfc warns on it; RFC 9864 replaces it), so
# a 401's ``WWW-Authenticate: DPoP algs=...`` announces exactly these two.
DPOP_ALGS: tuple[str, ...] = ("ES256", "Ed25519")
_KEY_SHAPE = {"ES256": ("EC", "P-256"), "Ed25519": ("OKP", "Ed25519")}
DPOP_TYP = "dpop+jwt"
# A proof older than this is refused: it is made for one request, moments before sending.
DPOP_PROOF_MAX_AGE_S = 60
# ...and one dated this far ahead of our clock is tolerated (client clocks drift a little).
DPOP_CLOCK_SKEW_S = 10
# Longest proof looked at: an ES256 proof is ~450 characters, with its jwk.
DPOP_PROOF_MAX_CHARS = 2048
# Longest jti kept in the replay cache: 128 random bits base64url are 22 characters, a UUID
# 36; longer would only let a client make each cache entry expensive.
DPOP_JTI_MAX_CHARS = 64
# jti entries kept at once per process: 60 s of proofs at ~3,000 calls/s, ~100 bytes each.
DPOP_REPLAY_MAX = 200_000
# ...of which one owner (a person's sessions; one source's sign-ins) holds at most this many:
# ~80 calls/s for a whole minute, far above a person's tools, so that one tenant filling its
# share is refused alone instead of the cache filling and refusing everyone.
DPOP_REPLAY_PER_OWNER_MAX = 5_000
# Parsed public keys kept by their JSON (importing and thumbprinting one costs ~110 µs).
DPOP_KEY_CACHE_MAX = 4096
# Normalised URLs kept (the gateway's few routes, and what clients name for them).
DPOP_URL_CACHE_MAX = 1024
# Members of a JWK that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_REGISTRY = JWSRegistry(algorithms=list(DPOP_ALGS))


class InvalidProof(InvalidToken):
    """A DPoP proof that does not prove possession for this request. Same public message
    as ``InvalidToken``: the caller learns only that the call was not authenticated."""


class ReplayVerdict(enum.Enum):
    NEW = "new"
    REPLAYED = "replayed"
    FULL = "full"
    UNAVAILABLE = "unavailable"  # the (shared) cache cannot be asked: refused, fail closed


class ReplayCache(Protocol):
    def first_use(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> ReplayVerdict:
        """Record ``key`` until ``expires_at``: NEW the first time, REPLAYED after, FULL
        when it cannot be recorded (the caller refuses: fail closed). ``owner`` names whose
        entry it is, so that one owner cannot take the whole cache."""
        ...


class MemoryReplayCache:
    """One process's jti cache: a dict plus a heap of expiries, bounded by ``max_entries``
    in all and ``per_owner`` for each owner."""

    def __init__(
        self, max_entries: int = DPOP_REPLAY_MAX, per_owner: int = DPOP_REPLAY_PER_OWNER_MAX
    ) -> None:
        self.max_entries = max_entries
        self.per_owner = per_owner
        self._until: dict[str, tuple[float, str | None]] = {}
        self._owned: dict[str, int] = {}
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            until, owner = self._until.get(key, (math.inf, None))
            if until <= now:
                del self._until[key]
                if owner is not None:
                    left = self._owned[owner] - 1
                    if left:
                        self._owned[owner] = left
                    else:
                        del self._owned[owner]

    def first_use(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> ReplayVerdict:
        self._expire(now)
        if key in self._until:
            return ReplayVerdict.REPLAYED
        if len(self._until) >= self.max_entries:
            return ReplayVerdict.FULL
        if owner is not None:
            held = self._owned.get(owner, 0)
            if held >= self.per_owner:
                return ReplayVerdict.FULL
            self._owned[owner] = held + 1
        self._until[key] = (expires_at, owner)
        heapq.heappush(self._expiries, (expires_at, key))
        return ReplayVerdict.NEW


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A proof that checked out: its key's thumbprint, and the entry it took in the replay
    cache (what a shared cache must record too: ``replay_key`` until ``expires_at``, counted
    against ``owner``)."""

    jkt: str
    replay_key: str
    expires_at: float
    owner: str | None


_VERDICT_REASONS = {
    ReplayVerdict.REPLAYED: Reason.DPOP_REPLAY,
    ReplayVerdict.FULL: Reason.DPOP_REPLAY_FULL,
    ReplayVerdict.UNAVAILABLE: Reason.DPOP_REPLAY_UNCHECKED,
}


def replay_reason(verdict: ReplayVerdict) -> Reason | None:
    """The refusal's reason code for a replay-cache verdict (None: NEW, taken)."""
    return _VERDICT_REASONS.get(verdict)


@lru_cache(maxsize=DPOP_URL_CACHE_MAX)
def normalize_htu(url: str) -> str:
    """Scheme and host lower-cased, default port dropped, query and fragment removed, an
    empty path as ``/``. ValueError when it is not an absolute http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port is None or port == default else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def access_token_hash(access_token: str) -> str:
    """The ``ath`` a proof carries for ``access_token``: base64url(SHA-256), unpadded."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@lru_cache(maxsize=DPOP_KEY_CACHE_MAX)
def _public_key(alg: str, jwk_json: bytes) -> tuple[ECKey | OKPKey, str]:
    """The imported public key and its RFC 7638 thumbprint (SHA-256)."""
    data = orjson.loads(jwk_json)
    kty, crv = _KEY_SHAPE[alg]
    if data.get("kty") != kty or data.get("crv") != crv:
        raise InvalidProof(Reason.DPOP_KEY)
    try:
        key: ECKey | OKPKey = (ECKey if kty == "EC" else OKPKey).import_key(data)
    except (JoseError, ValueError, TypeError):
        raise InvalidProof(Reason.DPOP_KEY) from None
    if key.is_private:
        raise InvalidProof(Reason.DPOP_KEY)
    return key, key.thumbprint()


def _header_key(header: dict[str, Any], alg: str) -> tuple[ECKey | OKPKey, str]:
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidProof(Reason.DPOP_KEY)
    try:
        canonical = orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise InvalidProof(Reason.DPOP_KEY) from None
    return _public_key(alg, canonical)


def _claims(obj: jws.CompactSignature) -> dict[str, Any]:
    try:
        body = orjson.loads(obj.payload)
    except orjson.JSONDecodeError:
        raise InvalidProof(Reason.DPOP_MALFORMED) from None
    if not isinstance(body, dict):
        raise InvalidProof(Reason.DPOP_MALFORMED)
    jti, htm, htu, iat = body.get("jti"), body.get("htm"), body.get("htu"), body.get("iat")
    if not isinstance(jti, str) or not 0 < len(jti) <= DPOP_JTI_MAX_CHARS:
        raise InvalidProof(Reason.DPOP_MALFORMED)
    if not isinstance(htm, str) or not isinstance(htu, str):
        raise InvalidProof(Reason.DPOP_MALFORMED)
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise InvalidProof(Reason.DPOP_MALFORMED)
    return body


def verify_proof(
    proof: str | None,
    *,
    method: str,
    url: str,
    now: float,
    access_token: str | None,
    replay: ReplayCache,
    expected_jkt: str | None = None,
    owner: str | None = None,
) -> str:
    """The thumbprint (jkt) of the key that signed ``proof`` for ``method`` on ``url`` at
    ``now``; ``InvalidProof`` with a reason code otherwise. ``url`` is the configured public
    URL plus the request path. With ``access_token``, the proof must carry its ``ath``; with
    ``expected_jkt`` (the token's ``cnf.jkt``), be signed by that key — checked before the
    proof takes a place in the replay cache, so that a copied token with a key of one's own
    cannot fill it. ``owner`` is whose place it takes (``ReplayCache.first_use``)."""
    return check_proof(
        proof,
        method=method,
        url=url,
        now=now,
        access_token=access_token,
        replay=replay,
        expected_jkt=expected_jkt,
        owner=owner,
    ).jkt


def check_proof(
    proof: str | None,
    *,
    method: str,
    url: str,
    now: float,
    access_token: str | None,
    replay: ReplayCache,
    expected_jkt: str | None = None,
    owner: str | None = None,
) -> VerifiedProof:
    """``verify_proof``, answering the replay-cache entry the proof took as well."""
    if not proof:
        raise InvalidProof(Reason.DPOP_MISSING)
    if len(proof) > DPOP_PROOF_MAX_CHARS:
        raise InvalidProof(Reason.DPOP_MALFORMED)
    try:
        obj = jws.extract_compact(proof.encode("ascii"), registry=_REGISTRY)
        header = obj.headers()
    except (JoseError, ValueError, UnicodeError):
        raise InvalidProof(Reason.DPOP_MALFORMED) from None
    if header.get("typ") != DPOP_TYP:
        raise InvalidProof(Reason.DPOP_MALFORMED)
    alg = header.get("alg")
    if alg not in DPOP_ALGS:
        raise InvalidProof(Reason.DPOP_ALG)
    key, jkt = _header_key(header, str(alg))
    try:
        valid = jws.validate_compact(obj, key, registry=_REGISTRY)
    except (JoseError, ValueError):
        valid = False
    if not valid:
        raise InvalidProof(Reason.DPOP_BAD_SIGNATURE)
    body = _claims(obj)
    if body["htm"] != method:
        raise InvalidProof(Reason.DPOP_METHOD)
    try:
        if normalize_htu(body["htu"]) != normalize_htu(url):
            raise InvalidProof(Reason.DPOP_URL)
    except ValueError:
        raise InvalidProof(Reason.DPOP_URL) from None
    iat = float(body["iat"])
    if not now - DPOP_PROOF_MAX_AGE_S <= iat <= now + DPOP_CLOCK_SKEW_S:
        raise InvalidProof(Reason.DPOP_IAT)
    if access_token is not None:
        ath = body.get("ath")
        expected = access_token_hash(access_token)
        if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
            raise InvalidProof(Reason.DPOP_ATH)
    if expected_jkt is not None and not hmac.compare_digest(jkt, expected_jkt):
        raise InvalidProof(Reason.DPOP_KEY_MISMATCH)
    # Last: only a proof that is valid in every other way takes a place in the cache.
    # Kept one second past the last instant the proof is accepted.
    used = VerifiedProof(jkt, f"{jkt}:{body['jti']}", iat + DPOP_PROOF_MAX_AGE_S + 1, owner)
    verdict = replay.first_use(used.replay_key, expires_at=used.expires_at, now=now, owner=owner)
    reason = replay_reason(verdict)
    if reason is not None:
        raise InvalidProof(reason)
    return used


# ── the client's side ──────────────────────────────────────────────────────────────────────
def generate_proof_key() -> ECKey:
    """A fresh P-256 key pair for ES256 proofs; it stays on the client."""
    return ECKey.generate_key("P-256", private=True)


def proof_key_thumbprint(key: ECKey | OKPKey) -> str:
    """RFC 7638 thumbprint of the public key: what a token's ``cnf.jkt`` names."""
    return key.thumbprint()


def make_proof(
    key: ECKey | OKPKey, *, method: str, url: str, now: float, access_token: str | None = None
) -> str:
    """A DPoP proof for one request (``url`` without query or fragment, as RFC 9449 asks)."""
    alg = "ES256" if isinstance(key, ECKey) else "Ed25519"
    parts = urlsplit(url)
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": f"{parts.scheme}://{parts.netloc}{parts.path or '/'}",
        "iat": int(now),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    header = {"alg": alg, "typ": DPOP_TYP, "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key, registry=_REGISTRY)
