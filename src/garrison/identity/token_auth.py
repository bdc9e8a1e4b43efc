"""Authenticate a call made with a DPoP-bound access token: ``Authorization: DPoP <token>``
plus a ``DPoP: <proof>`` header. Pure apart from the replay cache it is handed.

The answer has the shape ``authenticate`` gives for an API key (an ``AuthResult``), plus the
token's claims: the session id stands where a key id stands (locks on a "credential" name a
session, admission limits count per session), and the caller reads ``mfa`` from it for
policy. Locks themselves are the caller's business, as they are for keys: a lock on the
person covers every session of theirs, a lock naming the session id covers that session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from garrison.domain import Org, Principal, Reason
from garrison.domain.standing import standing_refusal
from garrison.identity.access_tokens import (
    InvalidToken,
    SessionClaims,
    TokenSigner,
    VerifiedTokens,
)
from garrison.identity.authenticate import Address, AuthResult
from garrison.identity.dpop import (
    DPOP_ALGS,
    ReplayCache,
    VerifiedProof,
    check_proof,
    normalize_htu,
)

# The Authorization scheme of a DPoP-bound token (RFC 9449 section 7.1).
DPOP_SCHEME = "dpop"
# The header a proof travels in.
DPOP_HEADER = "DPoP"
# RFC 9449 section 7.1: what a 401 to a call made with a DPoP-bound token answers in
# WWW-Authenticate (the token is refused, and the proof algorithms taken).
DPOP_CHALLENGE = f'DPoP error="invalid_token", algs="{" ".join(DPOP_ALGS)}"'


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """What a process needs to take tokens: the signing keys (the sign-in exchange signs
    with ``signer``; calls are verified against ``signer.keys``), the jti replay cache, and
    the public URL proofs must name (configured, never taken from the Host header)."""

    signer: TokenSigner
    replay: ReplayCache
    public_url: str
    verified: VerifiedTokens | None = None
    # With a shared replay cache (``replay`` in Redis): this process's own cache, which the
    # data plane checks proofs against first, recording the jti in the shared one with its
    # single admission round trip (``authenticate_token(defer_replay=True)``). None: every
    # check goes to ``replay``.
    local_replay: ReplayCache | None = None

    def __post_init__(self) -> None:
        # Fails at start-up, not at the first call, when public_url is not a URL.
        normalize_htu(self.public_url)
        if self.verified is None or self.verified.keys is not self.signer.keys:
            object.__setattr__(self, "verified", VerifiedTokens(self.signer.keys))

    def url_for(self, path: str) -> str:
        return self.public_url.rstrip("/") + path


@dataclass(frozen=True, slots=True)
class TokenAuthResult:
    auth: AuthResult
    # The verified claims once token and proof check out (also on a later refusal, such as
    # an inactive principal, so the refusal can be attributed in the audit log).
    session: SessionClaims | None = None
    # The proof that checked out, with the replay entry it took (with ``defer_replay``, the
    # caller still owes the shared cache that entry).
    proof: VerifiedProof | None = None

    @property
    def ok(self) -> bool:
        return self.auth.ok


def dpop_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: DPoP <token>`` header; None for any other scheme."""
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != DPOP_SCHEME:
        return None
    return value.strip()


def authenticate_token(
    token: str,
    proofs: list[str],
    *,
    method: str,
    path: str,
    tokens: TokenAuth | None,
    principals: Mapping[str, Principal],
    orgs: Mapping[str, Org] | None = None,
    now: float,
    address: Address,
    defer_replay: bool = False,
) -> TokenAuthResult:
    """Token, then proof (for this method and ``public_url`` + ``path``, bound to this token
    by ``ath``), then the proof's key against the token's ``cnf.jkt``, then the person.
    ``tokens`` None (a process that takes no tokens): every token is refused.
    ``defer_replay`` (and ``tokens.local_replay`` set): the proof is checked against this
    process's cache only; the caller records ``proof.replay_key`` in the shared one before
    the call goes on."""
    if tokens is None:
        return TokenAuthResult(AuthResult(Reason.TOKEN_KID_UNKNOWN))
    try:
        assert tokens.verified is not None  # set by __post_init__
        claims = tokens.verified.verify(token, now=now)
    except InvalidToken as refused:
        return TokenAuthResult(AuthResult(refused.reason))
    try:
        if len(proofs) > 1:
            raise InvalidToken(Reason.DPOP_MALFORMED)  # RFC 9449: exactly one proof
        local = tokens.local_replay if defer_replay else None
        proof = check_proof(
            proofs[0] if proofs else None,
            method=method,
            url=tokens.url_for(path),
            now=now,
            access_token=token,
            replay=tokens.replay if local is None else local,
            # The binding before the replay cache; each person's proofs count against
            # their own share of it.
            expected_jkt=claims.jkt,
            owner=claims.principal_id,
        )
    except InvalidToken as refused:
        if refused.reason is Reason.DPOP_KEY_MISMATCH:  # a copied token: attributable
            return TokenAuthResult(AuthResult(refused.reason, key_id=claims.session_id))
        return TokenAuthResult(AuthResult(refused.reason))
    principal = principals.get(claims.principal_id)
    org = orgs.get(principal.org_id) if orgs is not None and principal is not None else None
    reason = standing_refusal(
        credential=None, principal=principal, org=org, now=now, address=address
    )
    return TokenAuthResult(
        AuthResult(reason, key_id=claims.session_id, principal=principal),
        session=claims,
        proof=proof if local is not None else None,
    )


def session_principal(principal: Principal, session: SessionClaims) -> Principal:
    """``principal`` as this session may act: the roles its token carries (what the
    provider's groups left at sign-in), intersected with the roles the directory grants now,
    so a token can only ever narrow (a role revoked since sign-in is gone at once)."""
    held = principal.roles & frozenset(session.roles)
    return principal if held == principal.roles else replace(principal, roles=held)
