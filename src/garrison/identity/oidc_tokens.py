"""ID-token validation (OpenID Connect Core §3.1.3.7) with joserfc. Pure: keys and clock in.

Every check is the library's or a plain comparison on the claims the library verified:
signature (joserfc, with the algorithm allow-list of the provider's configuration, never the
token's own choice), ``iss``, ``aud``, ``azp``, ``exp``/``nbf``/``iat`` within
``ID_TOKEN_SKEW_S``, the nonce, and the token's type. A failure raises
``IdTokenRejected`` with a reason code for the audit log; the caller answers every one of
them with the same refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jwt import JWTClaimsRegistry

from garrison.errors import Unauthenticated
from garrison.identity.oidc_config import ALLOWED_ALGORITHMS, OidcProvider

# Clocks of the provider and of Garrison may disagree by this much (exp, nbf, iat): a minute
# absorbs NTP drift without stretching a five-minute token noticeably.
ID_TOKEN_SKEW_S = 60
# An ID token is exchanged right after the provider issued it (sign-in or refresh): one
# issued longer ago than this is refused even if the provider gave it a longer life.
ID_TOKEN_MAX_AGE_S = 600
# Real ID tokens are 1-3 KB (a large groups claim a few KB more); anything bigger is refused
# before any parsing or signature work.
ID_TOKEN_MAX_BYTES = 16 * 1024
# Subjects are at most 255 ASCII characters (OIDC Core §2).
SUBJECT_MAX_CHARS = 255
# Header parameters that point at keys the token chooses itself: never honoured, refused.
_KEY_POINTERS = frozenset({"jku", "jwk", "x5u", "x5c"})
# Types that are not ID tokens (a DPoP proof, an access token, a logout token).
_OTHER_TYPES = frozenset({"dpop+jwt", "at+jwt", "logout+jwt", "application/at+jwt"})


class IdTokenRejected(Unauthenticated):
    """An ID token that is not valid; ``reason`` (a short code) is for the audit log only."""

    default_message = "Sign-in refused: the identity token is not valid."

    def __init__(self, reason: str) -> None:
        # The detail is the public message too (admin-shaped errors show the detail): the
        # cause stays in ``reason``, for the audit log only.
        super().__init__(self.default_message, public_message=self.default_message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IdToken:
    """The verified claims Garrison uses (never the raw token)."""

    issuer: str
    subject: str
    person: str  # the configured person claim's value, for the record only
    groups: frozenset[str]
    amr: tuple[str, ...]
    acr: str | None
    auth_time: float
    issued_at: float
    expires_at: float
    nonce: str
    digest: str  # SHA-256 of what was signed: the token's identity for the replay cache


def token_digest(raw: str) -> str:
    """SHA-256 of the signed part (header and payload), not of the whole text: the signature
    is not unique to them (an ECDSA (r, s) verifies as (r, n - s) too), so a digest of the
    whole token would let the same ID token be exchanged again under a twin signature."""
    signed, _, _ = raw.rpartition(".")
    return hashlib.sha256(signed.encode()).hexdigest()


def unverified_header_and_issuer(raw: str) -> tuple[dict[str, Any], str]:
    """The header and ``iss`` of a token, *unverified*: only to choose which provider's keys
    verify it (the verified ``iss`` is compared again afterwards)."""
    if len(raw) > ID_TOKEN_MAX_BYTES:
        raise IdTokenRejected("too_large")
    try:
        sig = jws.extract_compact(raw.encode())
        claims = orjson.loads(sig.payload)
    except (JoseError, ValueError, TypeError):
        raise IdTokenRejected("malformed") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise IdTokenRejected("malformed")
    return dict(sig.headers()), claims["iss"]


def check_header(header: dict[str, Any], provider: OidcProvider) -> str | None:
    """The header's algorithm against the allow-list, no key pointers, the right type;
    returns the ``kid`` (None if absent)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in provider.algorithms or alg not in ALLOWED_ALGORITHMS:
        raise IdTokenRejected("alg_not_allowed")
    if _KEY_POINTERS & header.keys():
        raise IdTokenRejected("key_in_header")
    typ = header.get("typ")
    if isinstance(typ, str) and typ.lower() in _OTHER_TYPES:
        raise IdTokenRejected("wrong_type")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
        raise IdTokenRejected("bad_kid")
    return kid


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenRejected(f"missing_{name}")
    return float(value)


def validate_id_token(
    raw: str,
    *,
    provider: OidcProvider,
    key: Key,
    now: float,
    nonce_ok: Callable[[str], bool],
) -> IdToken:
    """Verify ``raw`` with ``key`` (chosen by ``kid`` from the provider's JWKS) and check its
    claims for ``provider``. ``nonce_ok`` says whether the token's nonce is the one this
    client asked for (Garrison binds it to the client's DPoP key)."""
    header, _ = unverified_header_and_issuer(raw)
    check_header(header, provider)
    try:
        token = jwt.decode(raw, key, algorithms=list(provider.algorithms))
    except JoseError:
        raise IdTokenRejected("signature") from None
    claims = token.claims
    registry = JWTClaimsRegistry(
        now=int(now),
        leeway=ID_TOKEN_SKEW_S,
        iss={"essential": True, "value": provider.issuer},
        sub={"essential": True},
        aud={"essential": True, "value": provider.client_id},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        name = getattr(exc, "claim", None) or "claims"
        raise IdTokenRejected(f"claim_{name}") from None
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else list(aud)
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise IdTokenRejected("claim_azp")
    if azp is not None and azp != provider.client_id:
        raise IdTokenRejected("claim_azp")
    issued_at = _number(claims, "iat")
    if issued_at < now - ID_TOKEN_MAX_AGE_S - ID_TOKEN_SKEW_S:
        raise IdTokenRejected("too_old")
    subject = claims["sub"]
    if not isinstance(subject, str) or not 0 < len(subject) <= SUBJECT_MAX_CHARS:
        raise IdTokenRejected("claim_sub")
    nonce = claims.get("nonce")
    if nonce is None and not provider.require_nonce:
        nonce = ""  # a device-flow token (the provider's configuration allows it)
    elif not isinstance(nonce, str) or not nonce_ok(nonce):
        raise IdTokenRejected("nonce")
    amr = claims.get("amr", [])
    if not isinstance(amr, list) or not all(isinstance(a, str) for a in amr):
        raise IdTokenRejected("claim_amr")
    acr = claims.get("acr")
    if acr is not None and not isinstance(acr, str):
        raise IdTokenRejected("claim_acr")
    groups = claims.get(provider.groups_claim, [])
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise IdTokenRejected("claim_groups")
    auth_time = claims.get("auth_time")
    if auth_time is not None and _number(claims, "auth_time") > now + ID_TOKEN_SKEW_S:
        # A sign-in "in the future" would count as fresh MFA for the session's whole life.
        raise IdTokenRejected("claim_auth_time")
    person = claims.get(provider.person_claim, subject)
    return IdToken(
        issuer=provider.issuer,
        subject=subject,
        person=str(person)[:SUBJECT_MAX_CHARS],
        groups=frozenset(groups),
        amr=tuple(amr),
        acr=acr,
        # No auth_time: the provider did not say when the person authenticated; taking the
        # token's iat would call a refreshed token a fresh sign-in, so it counts as never.
        auth_time=_number(claims, "auth_time") if auth_time is not None else 0.0,
        issued_at=issued_at,
        expires_at=_number(claims, "exp"),
        nonce=nonce,
        digest=token_digest(raw),
    )


def has_mfa(token: IdToken, provider: OidcProvider) -> bool:
    """Whether the provider says the person used more than one factor."""
    return bool(set(token.amr) & set(provider.mfa_amr)) or (
        token.acr is not None and token.acr in provider.mfa_acr
    )
