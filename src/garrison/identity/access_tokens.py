"""Garrison's own access tokens: short-lived, signed with a key file, bound to a client key.

After a person signs in through the identity provider, Garrison issues a JWT of its own
(RFC 9068 shape, ``typ: at+jwt``) that names the person, the sign-in session, how the person
authenticated (``amr``/``acr``) and, in ``cnf.jkt``, the RFC 7638 thumbprint of the key the
client generated: every call must carry a DPoP proof signed by that key
(``garrison.identity.dpop``), so a copied token alone is useless.

The token is read only by Garrison itself, so it is signed with HMAC-SHA-256 (``HS256``)
under a 256-bit key from ``token.keys`` in the key directory (beside the pepper and the
sealing keys, outside the database). Chosen by measurement (``bench/token_bench.py``,
docs/tokens.md): an HS256 check costs a fraction of an ES256 or Ed25519 one, and the per-call
budget also has to pay for the client's proof, which is asymmetric by nature. A public-key
signature would only help a third party verify Garrison's tokens, and there is none; whoever
can read the key directory can mint tokens either way (they can read the pepper too).

Exactly one algorithm is accepted (no ``none``, no RS/ES/EdDSA, so no algorithm confusion),
the ``kid`` is looked up in a dict of the keys loaded from the file (never a path, URL or
query), and all parsing and signature checks are joserfc's. Every failure raises the one
opaque ``InvalidToken``; its ``reason`` (a ``Reason`` code) is for the audit log only.

Rotation: ``rotate_token_key`` puts a new key on top of the file; the newest signs, the
previous ones still verify until their tokens have expired (``TOKEN_KEYS_KEPT``).
"""

from __future__ import annotations

import base64
import contextlib
import math
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.jws import JWSRegistry

from garrison.domain import Reason
from garrison.errors import ConfigError, Unauthenticated
from garrison.keyring import read_secret_file, update_secret_file, write_secret_file

# An access token lives at most an hour: long enough that a working session refreshes rarely,
# short enough that a token taken off a device (with its key) dies soon on its own.
ACCESS_TOKEN_MAX_S = 3600
# Clock difference tolerated between replicas for "issued in the future" (not-yet-valid).
TOKEN_CLOCK_SKEW_S = 30
# Longest token looked at: a Garrison token is ~600 characters; bigger is not ours.
TOKEN_MAX_CHARS = 4096
# The only signing algorithm accepted (see the module docstring for why HMAC).
TOKEN_ALG = "HS256"  # noqa: S105 - an algorithm name
# RFC 9068 media type of a JWT access token.
TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret
# Issuer and audience: Garrison issues to itself.
TOKEN_ISSUER = "garrison"  # noqa: S105 - a name
TOKEN_AUDIENCE = "garrison"  # noqa: S105 - a name
# Key file beside pepper.key and seal.keys: lines "kid secret", newest first.
TOKEN_KEY_FILE = "token.keys"  # noqa: S105 - a file name
# 256-bit HMAC key: the SHA-256 block-size guidance; more adds nothing.
TOKEN_KEY_BYTES = 32
# Keys kept in the file: the newest signs, the others verify tokens issued before a rotation
# (one hour at most). Three allows two rotations inside one token lifetime.
TOKEN_KEYS_KEPT = 3
# 8 random bytes of kid: unique among the few keys ever kept at once.
TOKEN_KID_BYTES = 8
# Built once: parsing and checking allow exactly TOKEN_ALG.
_REGISTRY = JWSRegistry(algorithms=[TOKEN_ALG])
# Verified tokens remembered per process: one per live session, with room for thousands.
TOKEN_CACHE_MAX = 10_000
# Longest amr list and value carried: IdPs send a handful of short method names.
AMR_MAX_ITEMS = 16
AMR_VALUE_MAX_CHARS = 64
# Longest string claim kept (ids, issuer URLs, subjects).
CLAIM_MAX_CHARS = 512
# Most roles a token carries: Garrison has a handful (garrison.domain.roles); more is not ours.
ROLES_MAX_ITEMS = 16
ROLE_MAX_CHARS = 64

# RFC 8176 authentication method values, by factor. "mfa" says multiple factors outright.
_KNOWLEDGE = frozenset({"pwd", "pin", "kba"})
_POSSESSION = frozenset({"otp", "hwk", "swk", "sms", "tel", "sc", "pop"})
_INHERENCE = frozenset({"fpt", "face", "iris", "retina", "vbm", "user"})


def amr_shows_mfa(amr: tuple[str, ...]) -> bool:
    """True when the methods show more than one factor: ``mfa`` itself, or methods from at
    least two of knowledge / possession / inherence (``pwd`` + ``otp``, ``hwk`` + ``user`` as
    a passkey with user verification reports). One factor however strong (``hwk`` alone,
    ``otp`` alone) is not MFA. An IdP that reports MFA only through ``acr`` is mapped at
    sign-in: the exchange adds ``mfa`` to ``amr`` when ``acr`` is in the configured set, so
    the token records the decision rather than re-deriving it from configuration."""
    methods = set(amr)
    if "mfa" in methods:
        return True
    factors = sum(1 for group in (_KNOWLEDGE, _POSSESSION, _INHERENCE) if methods & group)
    return factors >= 2


class InvalidToken(Unauthenticated):
    """Any token that is not valid now. One message to the caller; ``reason`` is for the log."""

    default_message = "Invalid or missing access token."

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"access token refused: {reason.value}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a valid token says. ``session_id`` acts as the credential id for locks and
    limits; ``jkt`` is the thumbprint of the client key every proof must be signed with;
    ``roles`` are the roles the session holds after the provider's groups narrowed the
    person's (each call intersects them again with what the directory grants now)."""

    principal_id: str
    session_id: str
    jkt: str
    amr: tuple[str, ...]
    acr: str | None
    auth_time: float
    idp_issuer: str
    idp_subject: str
    issued_at: float
    expires_at: float
    roles: tuple[str, ...] = ()

    @property
    def mfa(self) -> bool:
        return amr_shows_mfa(self.amr)


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """Verification keys by ``kid`` (newest first in the file)."""

    by_kid: Mapping[str, OctKey]


def _new_key_line() -> str:
    kid = secrets.token_hex(TOKEN_KID_BYTES)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_KEY_BYTES)).rstrip(b"=")
    return f"{kid} {secret.decode()}"


def _parse_key_file(path: Path, text: str) -> list[tuple[str, OctKey]]:
    keys: list[tuple[str, OctKey]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path} line {number}: expected 'kid secret'")
        kid, secret = parts
        try:
            raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        except ValueError:
            raise ConfigError(f"{path} line {number}: the secret is not base64url") from None
        if len(raw) < TOKEN_KEY_BYTES:
            raise ConfigError(f"{path} line {number}: a key shorter than {TOKEN_KEY_BYTES} bytes")
        keys.append((kid, OctKey.import_key(raw, {"kid": kid})))
    if not keys:
        raise ConfigError(f"{path} holds no token-signing key")
    return keys


class TokenSigner:
    """The token-signing keys of ``token.keys``: the first signs, all verify."""

    def __init__(self, keys: list[tuple[str, OctKey]]) -> None:
        if not keys:
            raise ConfigError("no token-signing key")
        self.kid, self._key = keys[0]
        self.keys = TokenKeys({kid: key for kid, key in keys})

    @classmethod
    def from_dir(cls, key_dir: Path, *, create: bool = True) -> TokenSigner:
        """Load ``token.keys``; create it (0600) first if it is missing and ``create``: key
        directories made before tokens existed get one on first start."""
        path = key_dir / TOKEN_KEY_FILE
        if create and not path.exists():
            # Another process may make it first: then use theirs.
            with contextlib.suppress(FileExistsError):
                write_secret_file(path, _new_key_line() + "\n")
        return cls(_parse_key_file(path, read_secret_file(path)))

    def sign(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": TOKEN_ALG, "kid": self.kid, "typ": TOKEN_TYP}
        return jwt.encode(header, dict(claims), self._key, registry=_REGISTRY)


def create_token_key_file(key_dir: Path) -> None:
    write_secret_file(key_dir / TOKEN_KEY_FILE, _new_key_line() + "\n")


def rotate_token_key(key_dir: Path) -> str:
    """Put a new key on top of ``token.keys`` (keeping ``TOKEN_KEYS_KEPT`` in all); returns
    its kid. Running processes pick it up when they reload their keys (restart)."""
    path = key_dir / TOKEN_KEY_FILE
    line = _new_key_line()

    def add(text: str) -> str:
        old = [kept for kept in text.splitlines() if kept.strip()]
        _parse_key_file(path, "\n".join(old))  # refuse to rotate a damaged file
        return "\n".join([line, *old][:TOKEN_KEYS_KEPT]) + "\n"

    update_secret_file(path, add)  # one rotation at a time: none drops another's key
    return line.split()[0]


def issue_access_token(signer: TokenSigner, claims: SessionClaims) -> str:
    """Sign ``claims``. Refuses a lifetime over ``ACCESS_TOKEN_MAX_S`` (a caller's bug)."""
    lifetime = claims.expires_at - claims.issued_at
    if not 0 < lifetime <= ACCESS_TOKEN_MAX_S:
        raise ValueError(f"token lifetime {lifetime:.0f}s is not in (0, {ACCESS_TOKEN_MAX_S}]")
    body: dict[str, Any] = {
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "sub": claims.principal_id,
        "sid": claims.session_id,
        "jti": secrets.token_urlsafe(16),
        "cnf": {"jkt": claims.jkt},
        "amr": list(claims.amr),
        "roles": sorted(claims.roles),
        "auth_time": claims.auth_time,
        "idp": {"iss": claims.idp_issuer, "sub": claims.idp_subject},
        "iat": claims.issued_at,
        "exp": claims.expires_at,
    }
    if claims.acr is not None:
        body["acr"] = claims.acr
    return signer.sign(body)


def _string(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > CLAIM_MAX_CHARS:
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    return number


def _amr(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > AMR_MAX_ITEMS:
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    if not all(isinstance(v, str) and 0 < len(v) <= AMR_VALUE_MAX_CHARS for v in value):
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    return tuple(value)


def _roles(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > ROLES_MAX_ITEMS:
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    if not all(isinstance(v, str) and 0 < len(v) <= ROLE_MAX_CHARS for v in value):
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    return tuple(value)


def _claims(body: Mapping[str, Any]) -> SessionClaims:
    if body.get("iss") != TOKEN_ISSUER or body.get("aud") != TOKEN_AUDIENCE:
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    cnf, idp, acr = body.get("cnf"), body.get("idp"), body.get("acr")
    if not isinstance(cnf, dict) or not isinstance(idp, dict):
        raise InvalidToken(Reason.TOKEN_CLAIMS)
    return SessionClaims(
        principal_id=_string(body.get("sub")),
        session_id=_string(body.get("sid")),
        jkt=_string(cnf.get("jkt")),
        amr=_amr(body.get("amr")),
        acr=None if acr is None else _string(acr),
        auth_time=_number(body.get("auth_time")),
        idp_issuer=_string(idp.get("iss")),
        idp_subject=_string(idp.get("sub")),
        issued_at=_number(body.get("iat")),
        expires_at=_number(body.get("exp")),
        # Required: a token without the claim (issued before roles were carried) is refused.
        roles=_roles(body.get("roles")),
    )


def verify_access_token(keys: TokenKeys, token: str, *, now: float) -> SessionClaims:
    """The claims of ``token`` if it is a Garrison token valid at ``now``; else
    ``InvalidToken`` (whatever the cause, with the cause in ``reason``)."""
    if not token or len(token) > TOKEN_MAX_CHARS:
        raise InvalidToken(Reason.TOKEN_MALFORMED)
    try:
        obj = jws.extract_compact(token.encode("ascii"), registry=_REGISTRY)
        header = obj.headers()
    except (JoseError, ValueError, UnicodeError):
        raise InvalidToken(Reason.TOKEN_MALFORMED) from None
    if header.get("alg") != TOKEN_ALG:
        raise InvalidToken(Reason.TOKEN_ALG)
    if header.get("typ") != TOKEN_TYP:
        raise InvalidToken(Reason.TOKEN_MALFORMED)
    kid = header.get("kid")
    key = keys.by_kid.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken(Reason.TOKEN_KID_UNKNOWN)
    try:
        valid = jws.validate_compact(obj, key, registry=_REGISTRY)
    except (JoseError, ValueError):
        valid = False
    if not valid:
        raise InvalidToken(Reason.TOKEN_BAD_SIGNATURE)
    try:
        body = orjson.loads(obj.payload)
    except orjson.JSONDecodeError:
        raise InvalidToken(Reason.TOKEN_MALFORMED) from None
    if not isinstance(body, dict):
        raise InvalidToken(Reason.TOKEN_MALFORMED)
    claims = _claims(body)
    if claims.expires_at - claims.issued_at > ACCESS_TOKEN_MAX_S:
        raise InvalidToken(Reason.TOKEN_LIFETIME)
    _check_times(claims, now)
    return claims


def _check_times(claims: SessionClaims, now: float) -> None:
    if claims.issued_at > now + TOKEN_CLOCK_SKEW_S:
        raise InvalidToken(Reason.TOKEN_NOT_YET_VALID)
    if now >= claims.expires_at:
        raise InvalidToken(Reason.TOKEN_EXPIRED)


class VerifiedTokens:
    """Tokens already verified, by their exact text: a session sends the same token with
    every call, so its signature and claims are checked once, and only its times again
    (the proof, fresh per call, is always checked in full). Only tokens that verified are
    kept, at most ``max_entries`` (least recently used out first), for the keys they were
    verified with: a new ``TokenKeys`` (a rotation) starts an empty cache."""

    def __init__(self, keys: TokenKeys, max_entries: int = TOKEN_CACHE_MAX) -> None:
        self.keys = keys
        self.max_entries = max_entries
        self._claims: OrderedDict[str, SessionClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._claims)

    def verify(self, token: str, *, now: float) -> SessionClaims:
        claims = self._claims.get(token)
        if claims is None:
            claims = verify_access_token(self.keys, token, now=now)
            self._claims[token] = claims
            while len(self._claims) > self.max_entries:
                self._claims.popitem(last=False)
            return claims
        self._claims.move_to_end(token)
        _check_times(claims, now)
        return claims
