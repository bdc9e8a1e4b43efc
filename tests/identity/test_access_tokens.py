"""Tests for ``garrison.identity.access_tokens``: issue, verify, and the attacks on a token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from garrison.domain import Reason
from garrison.errors import ConfigError, Unauthenticated
from garrison.identity.access_tokens import (
    ACCESS_TOKEN_MAX_S,
    ROLE_MAX_CHARS,
    ROLES_MAX_ITEMS,
    TOKEN_CACHE_MAX,
    TOKEN_CLOCK_SKEW_S,
    TOKEN_KEY_FILE,
    TOKEN_KEYS_KEPT,
    TOKEN_MAX_CHARS,
    InvalidToken,
    SessionClaims,
    TokenSigner,
    VerifiedTokens,
    amr_shows_mfa,
    issue_access_token,
    rotate_token_key,
    verify_access_token,
)

NOW = 1_700_000_000.0
CLAIMS = SessionClaims(
    principal_id="p-ada",
    session_id="s-1",
    jkt="thumb",
    amr=("pwd", "otp"),
    acr=None,
    auth_time=NOW - 5,
    idp_issuer="https://idp.example",
    idp_subject="sub-1",
    issued_at=NOW,
    expires_at=NOW + 600,
    roles=("auditor", "security-admin"),
)


@pytest.fixture
def signer(tmp_path: Path) -> TokenSigner:
    return TokenSigner.from_dir(tmp_path)


def _reason(signer: TokenSigner, token: str, now: float = NOW) -> Reason:
    with pytest.raises(InvalidToken) as caught:
        verify_access_token(signer.keys, token, now=now)
    # One opaque message whatever the cause.
    assert caught.value.public_message == InvalidToken.default_message
    assert isinstance(caught.value, Unauthenticated)
    return caught.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], body: dict[str, object], signature: bytes = b"") -> str:
    parts = [json.dumps(header).encode(), json.dumps(body).encode()]
    return ".".join([_b64(parts[0]), _b64(parts[1]), _b64(signature)])


def _hmac_token(header: dict[str, object], body: dict[str, object], secret: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _body(signer: TokenSigner) -> dict[str, object]:
    token = issue_access_token(signer, CLAIMS)
    body: dict[str, object] = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return body


def test_a_token_round_trips(signer: TokenSigner) -> None:
    token = issue_access_token(signer, CLAIMS)
    assert verify_access_token(signer.keys, token, now=NOW + 1) == CLAIMS


def test_the_key_file_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    first = TokenSigner.from_dir(tmp_path)
    mode = stat.S_IMODE((tmp_path / TOKEN_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = TokenSigner.from_dir(tmp_path)
    assert again.kid == first.kid


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    TokenSigner.from_dir(tmp_path)
    (tmp_path / TOKEN_KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        TokenSigner.from_dir(tmp_path)


def test_rotation_signs_with_the_new_key_and_still_verifies_the_old(tmp_path: Path) -> None:
    old = TokenSigner.from_dir(tmp_path)
    token = issue_access_token(old, CLAIMS)
    kid = rotate_token_key(tmp_path)
    new = TokenSigner.from_dir(tmp_path)
    assert new.kid == kid != old.kid
    assert verify_access_token(new.keys, token, now=NOW).session_id == "s-1"
    assert verify_access_token(new.keys, issue_access_token(new, CLAIMS), now=NOW)


def test_rotation_keeps_a_bounded_number_of_keys(tmp_path: Path) -> None:
    first = TokenSigner.from_dir(tmp_path)
    token = issue_access_token(first, CLAIMS)
    for _ in range(TOKEN_KEYS_KEPT):
        rotate_token_key(tmp_path)
    signer = TokenSigner.from_dir(tmp_path)
    assert len(signer.keys.by_kid) == TOKEN_KEYS_KEPT
    assert _reason(signer, token) is Reason.TOKEN_KID_UNKNOWN


def test_issuing_refuses_a_lifetime_over_the_limit(signer: TokenSigner) -> None:
    too_long = replace(CLAIMS, expires_at=CLAIMS.issued_at + ACCESS_TOKEN_MAX_S + 1)
    with pytest.raises(ValueError, match="lifetime"):
        issue_access_token(signer, too_long)
    at_limit = replace(CLAIMS, expires_at=CLAIMS.issued_at + ACCESS_TOKEN_MAX_S)
    assert verify_access_token(signer.keys, issue_access_token(signer, at_limit), now=NOW)


def test_a_token_signed_with_a_lifetime_over_the_limit_is_refused(signer: TokenSigner) -> None:
    body = _body(signer)
    body["exp"] = NOW + ACCESS_TOKEN_MAX_S + 1
    token = signer.sign(body)
    assert _reason(signer, token) is Reason.TOKEN_LIFETIME


def test_an_expired_token_is_refused(signer: TokenSigner) -> None:
    token = issue_access_token(signer, CLAIMS)
    assert _reason(signer, token, now=CLAIMS.expires_at) is Reason.TOKEN_EXPIRED


def test_a_token_issued_in_the_future_is_refused(signer: TokenSigner) -> None:
    token = issue_access_token(signer, CLAIMS)
    early = NOW - TOKEN_CLOCK_SKEW_S - 1
    assert _reason(signer, token, now=early) is Reason.TOKEN_NOT_YET_VALID
    assert verify_access_token(signer.keys, token, now=NOW - TOKEN_CLOCK_SKEW_S)


def test_alg_none_is_refused(signer: TokenSigner) -> None:
    body = _body(signer)
    token = _forge({"alg": "none", "typ": "at+jwt", "kid": signer.kid}, body)
    assert _reason(signer, token) is Reason.TOKEN_ALG


def test_hs256_signed_with_a_public_key_is_refused(signer: TokenSigner) -> None:
    # The classic confusion: a verifier that takes the public key as an HMAC secret. Ours
    # only knows its own secret keys, so any HMAC made with anything public fails.
    # (joserfc refuses to make such a key, so the attacker's HMAC is computed by hand.)
    public_pem = ECKey.generate_key("P-256").as_pem(private=False)
    header: dict[str, object] = {"alg": "HS256", "typ": "at+jwt", "kid": signer.kid}
    token = _hmac_token(header, _body(signer), public_pem)
    assert _reason(signer, token) is Reason.TOKEN_BAD_SIGNATURE


def test_an_es256_token_is_refused_even_when_validly_signed(signer: TokenSigner) -> None:
    key = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": signer.kid}, _body(signer), key)
    assert _reason(signer, token) is Reason.TOKEN_ALG


def test_an_unknown_kid_is_refused(signer: TokenSigner, tmp_path: Path) -> None:
    other = TokenSigner.from_dir(tmp_path / "other")
    token = issue_access_token(other, CLAIMS)
    assert _reason(signer, token) is Reason.TOKEN_KID_UNKNOWN


@pytest.mark.parametrize(
    "kid",
    ["../../../dev/null", "' OR 1=1 --", "/etc/passwd", "https://evil.example/jwks", "", 7],
)
def test_kid_injection_finds_no_key(signer: TokenSigner, kid: object) -> None:
    # A kid is only ever a dict key: a path, a query or a URL names nothing.
    token = _hmac_token({"alg": "HS256", "typ": "at+jwt", "kid": kid}, _body(signer), b"\0" * 32)
    assert _reason(signer, token) is Reason.TOKEN_KID_UNKNOWN


def test_a_tampered_claim_breaks_the_signature(signer: TokenSigner) -> None:
    token = issue_access_token(signer, CLAIMS)
    header, _, sig = token.split(".")
    body = _body(signer)
    body["sub"] = "p-admin"
    forged = f"{header}.{_b64(json.dumps(body).encode())}.{sig}"
    assert _reason(signer, forged) is Reason.TOKEN_BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://idp.example"},
        {"aud": "someone-else"},
        {"sub": ""},
        {"cnf": {}},
        {"cnf": "thumb"},
        {"amr": "pwd"},
        {"amr": ["x" * 65]},
        {"exp": "tomorrow"},
        {"iat": True},
        {"idp": None},
        {"roles": "security-admin"},
        {"roles": [1]},
        {"roles": [""]},
        {"roles": ["x" * 65]},
        {"roles": ["auditor"] * 17},
    ],
)
def test_a_signed_token_with_bad_claims_is_refused(
    signer: TokenSigner, change: dict[str, object]
) -> None:
    body = _body(signer) | change
    assert _reason(signer, signer.sign(body)) is Reason.TOKEN_CLAIMS


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c", "not a token", "é.é.é"])
def test_garbage_is_malformed(signer: TokenSigner, token: str) -> None:
    assert _reason(signer, token) is Reason.TOKEN_MALFORMED


def test_a_token_over_the_size_limit_is_not_parsed(signer: TokenSigner) -> None:
    assert _reason(signer, "a" * (TOKEN_MAX_CHARS + 1)) is Reason.TOKEN_MALFORMED


def test_a_token_of_another_type_is_refused(signer: TokenSigner) -> None:
    key = signer.keys.by_kid[signer.kid]
    token = jwt.encode({"alg": "HS256", "typ": "JWT", "kid": signer.kid}, _body(signer), key)
    assert _reason(signer, token) is Reason.TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("amr", "mfa"),
    [
        (("mfa",), True),
        (("pwd", "otp"), True),
        (("hwk", "user"), True),
        (("pwd", "fpt"), True),
        (("pwd",), False),
        (("otp",), False),
        (("hwk",), False),
        (("pwd", "pin"), False),
        ((), False),
    ],
)
def test_mfa_needs_two_factors(amr: tuple[str, ...], mfa: bool) -> None:
    assert amr_shows_mfa(amr) is mfa
    assert replace(CLAIMS, amr=amr).mfa is mfa


def test_a_remembered_token_still_expires(signer: TokenSigner) -> None:
    cache = VerifiedTokens(signer.keys)
    token = issue_access_token(signer, CLAIMS)
    assert cache.verify(token, now=NOW) == CLAIMS
    assert len(cache) == 1
    with pytest.raises(InvalidToken) as caught:
        cache.verify(token, now=CLAIMS.expires_at)
    assert caught.value.reason is Reason.TOKEN_EXPIRED


def test_only_verified_tokens_are_remembered(signer: TokenSigner) -> None:
    cache = VerifiedTokens(signer.keys)
    with pytest.raises(InvalidToken):
        cache.verify("a.b.c", now=NOW)
    assert len(cache) == 0


def test_the_verified_token_cache_is_bounded(signer: TokenSigner) -> None:
    assert VerifiedTokens(signer.keys).max_entries == TOKEN_CACHE_MAX
    cache = VerifiedTokens(signer.keys, max_entries=2)
    tokens = [issue_access_token(signer, replace(CLAIMS, session_id=f"s-{i}")) for i in range(3)]
    for token in tokens:
        cache.verify(token, now=NOW)
    assert len(cache) == 2


def test_the_token_carries_the_sessions_roles(signer: TokenSigner) -> None:
    assert _body(signer)["roles"] == ["auditor", "security-admin"]
    token = issue_access_token(signer, CLAIMS)
    assert verify_access_token(signer.keys, token, now=NOW + 1).roles == CLAIMS.roles


def test_a_token_without_the_roles_claim_is_refused(signer: TokenSigner) -> None:
    # Tokens from before roles were carried (or a forger's): no claim, no session.
    body = _body(signer)
    del body["roles"]
    assert _reason(signer, signer.sign(body)) is Reason.TOKEN_CLAIMS


def test_the_roles_limits_hold(signer: TokenSigner) -> None:
    most = [f"r{i}" for i in range(ROLES_MAX_ITEMS)]
    longest = ["x" * ROLE_MAX_CHARS]
    for roles in (most, longest):
        token = signer.sign(_body(signer) | {"roles": roles})
        assert verify_access_token(signer.keys, token, now=NOW + 1).roles == tuple(roles)
    for roles in ([*most, "one-more"], ["x" * (ROLE_MAX_CHARS + 1)]):
        assert _reason(signer, signer.sign(_body(signer) | {"roles": roles})) is (
            Reason.TOKEN_CLAIMS
        )
