"""Tests for ``garrison.identity.token_auth``: a token and its proof, together, for a call."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from garrison.domain import Level, Principal, PrincipalKind, Reason, Status
from garrison.identity.access_tokens import SessionClaims, TokenSigner, issue_access_token
from garrison.identity.dpop import MemoryReplayCache, generate_proof_key, make_proof
from garrison.identity.token_auth import (
    TokenAuth,
    TokenAuthResult,
    authenticate_token,
    dpop_token,
    session_principal,
)

NOW = 1_700_000_000.0
PUBLIC = "https://garrison.example"
PATH = "/v1/chat/completions"
ADDRESS = ipaddress.ip_address("10.0.0.5")
KEY = generate_proof_key()
DANA = Principal(
    id="p-dana",
    name="dana",
    org_id="internal",
    kind=PrincipalKind.HUMAN,
    clearance=Level.INTERNAL,
    compartments=frozenset(),
    status=Status.ACTIVE,
)


@pytest.fixture
def tokens(tmp_path: Path) -> TokenAuth:
    return TokenAuth(TokenSigner.from_dir(tmp_path), MemoryReplayCache(), PUBLIC)


def _token(tokens: TokenAuth, jkt: str | None = None, roles: tuple[str, ...] = ()) -> str:
    claims = SessionClaims(
        principal_id=DANA.id,
        session_id="s-1",
        jkt=jkt or KEY.thumbprint(),
        amr=("pwd", "hwk"),
        acr=None,
        auth_time=NOW,
        idp_issuer="https://idp.example",
        idp_subject="dana-sub",
        issued_at=NOW,
        expires_at=NOW + 600,
        roles=roles,
    )
    return issue_access_token(tokens.signer, claims)


def _call(
    tokens: TokenAuth | None,
    token: str,
    proofs: list[str],
    principals: dict[str, Principal] | None = None,
) -> TokenAuthResult:
    return authenticate_token(
        token,
        proofs,
        method="POST",
        path=PATH,
        tokens=tokens,
        principals={DANA.id: DANA} if principals is None else principals,
        now=NOW + 1,
        address=ADDRESS,
    )


def _proof(token: str, key: object = KEY, url: str = PUBLIC + PATH) -> str:
    return make_proof(key, method="POST", url=url, now=NOW + 1, access_token=token)  # type: ignore[arg-type]


def test_a_bound_token_with_its_proof_authenticates(tokens: TokenAuth) -> None:
    token = _token(tokens)
    result = _call(tokens, token, [_proof(token)])
    assert result.ok
    assert result.auth.principal == DANA
    assert result.auth.key_id == "s-1"
    assert result.auth.credential is None
    assert result.session is not None and result.session.mfa


def test_a_token_without_its_proof_is_refused(tokens: TokenAuth) -> None:
    result = _call(tokens, _token(tokens), [])
    assert result.auth.reason is Reason.DPOP_MISSING
    assert result.session is None and result.auth.principal is None


def test_a_copied_token_with_another_key_is_refused(tokens: TokenAuth) -> None:
    token = _token(tokens)
    thief = generate_proof_key()
    result = _call(tokens, token, [_proof(token, thief)])
    assert result.auth.reason is Reason.DPOP_KEY_MISMATCH
    # Attributed to the session whose token was copied, never authenticated.
    assert result.auth.key_id == "s-1" and result.auth.principal is None


def test_two_proofs_are_refused(tokens: TokenAuth) -> None:
    token = _token(tokens)
    assert _call(tokens, token, [_proof(token), _proof(token)]).auth.reason is (
        Reason.DPOP_MALFORMED
    )


def test_the_proof_must_name_the_public_url_not_the_host_asked(tokens: TokenAuth) -> None:
    token = _token(tokens)
    proof = _proof(token, url="http://10.0.0.1:8080" + PATH)  # what the Host header said
    assert _call(tokens, token, [proof]).auth.reason is Reason.DPOP_URL


def test_a_replayed_call_is_refused(tokens: TokenAuth) -> None:
    token = _token(tokens)
    proof = _proof(token)
    assert _call(tokens, token, [proof]).ok
    assert _call(tokens, token, [proof]).auth.reason is Reason.DPOP_REPLAY


def test_a_token_of_a_disabled_person_is_refused(tokens: TokenAuth) -> None:
    token = _token(tokens)
    disabled = dataclasses.replace(DANA, status=Status.DISABLED)
    result = _call(tokens, token, [_proof(token)], {DANA.id: disabled})
    assert result.auth.reason is Reason.PRINCIPAL_INACTIVE
    assert result.session is not None  # attributed in the audit log


def test_a_token_of_a_deleted_person_is_refused(tokens: TokenAuth) -> None:
    token = _token(tokens)
    assert _call(tokens, token, [_proof(token)], {}).auth.reason is Reason.PRINCIPAL_INACTIVE


def test_a_process_without_token_keys_refuses_every_token(tokens: TokenAuth) -> None:
    token = _token(tokens)
    assert _call(None, token, [_proof(token)]).auth.reason is Reason.TOKEN_KID_UNKNOWN


def test_a_public_url_that_is_not_one_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TokenAuth(TokenSigner.from_dir(tmp_path), MemoryReplayCache(), "garrison.example")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("DPoP abc.def.ghi", "abc.def.ghi"),
        ("dpop  abc ", "abc"),
        ("Bearer gk_x", None),
        (None, None),
    ],
)
def test_only_the_dpop_scheme_is_a_token(header: str | None, token: str | None) -> None:
    assert dpop_token(header) == token


def test_a_rotation_starts_a_new_verified_token_cache(tokens: TokenAuth, tmp_path: Path) -> None:
    token = _token(tokens)
    assert _call(tokens, token, [_proof(token)]).ok
    rotated = dataclasses.replace(tokens, signer=TokenSigner.from_dir(tmp_path / "new"))
    assert rotated.verified is not tokens.verified
    assert _call(rotated, token, [_proof(token)]).auth.reason is Reason.TOKEN_KID_UNKNOWN


@pytest.mark.parametrize(
    ("token_roles", "directory_roles", "held"),
    [
        # The provider's groups left both: the session holds both.
        (
            ("auditor", "security-admin"),
            {"auditor", "security-admin"},
            {"auditor", "security-admin"},
        ),
        # Narrowed at sign-in: the session lacks the role the directory still grants.
        (("auditor",), {"auditor", "security-admin"}, {"auditor"}),
        # Revoked in Garrison since sign-in: gone at once, whatever the token says.
        (("auditor", "security-admin"), {"auditor"}, {"auditor"}),
        # A token can never add a role the directory does not grant.
        (("security-admin",), set(), set()),
        ((), {"security-admin"}, set()),
    ],
)
def test_a_sessions_roles_only_narrow_the_directorys(
    tokens: TokenAuth,
    token_roles: tuple[str, ...],
    directory_roles: set[str],
    held: set[str],
) -> None:
    token = _token(tokens, roles=token_roles)
    person = dataclasses.replace(DANA, roles=frozenset(directory_roles))
    result = _call(tokens, token, [_proof(token)], {DANA.id: person})
    assert result.ok and result.session is not None
    assert result.session.roles == tuple(sorted(token_roles))
    assert session_principal(person, result.session).roles == held
