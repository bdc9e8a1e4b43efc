"""Tests for ``garrison.identity.authenticate``: every reason code, with the clock passed in."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from garrison.domain import (
    Credential,
    Level,
    Principal,
    PrincipalKind,
    Reason,
    Status,
)
from garrison.identity.authenticate import AuthResult, authenticate
from garrison.identity.keys import issue_key

PEPPER = bytes(range(32))
NOW = 1_700_000_000.0
EXPIRES = NOW + 3600.0
V4 = ipaddress.ip_address("10.1.2.3")
V6 = ipaddress.ip_address("2001:db8::7")

ISSUED = issue_key(PEPPER)
TOKEN = ISSUED.token.reveal()

PRINCIPAL = Principal(
    id="p-1",
    name="alice",
    org_id="o-1",
    kind=PrincipalKind.HUMAN,
    clearance=Level.RESTRICTED,
    compartments=frozenset({"alpha"}),
    status=Status.ACTIVE,
)
CREDENTIAL = Credential(
    id=ISSUED.key_id,
    principal_id=PRINCIPAL.id,
    secret_hash=ISSUED.secret_hash,
    created_at=NOW - 60.0,
    expires_at=EXPIRES,
    networks=(),
)


def auth(
    token: str | None = TOKEN,
    *,
    credential: Credential = CREDENTIAL,
    principal: Principal | None = PRINCIPAL,
    now: float = NOW,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = V4,
    pepper: bytes = PEPPER,
) -> AuthResult:
    principals = {principal.id: principal} if principal is not None else {}
    return authenticate(
        token,
        credentials={credential.id: credential},
        principals=principals,
        pepper=pepper,
        now=now,
        address=address,
    )


def other_secret_token() -> str:
    """The same key id with a different (well-formed) secret."""
    secret = TOKEN[len(f"gk_{ISSUED.key_id}_") :]  # the secret itself may contain "_"
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    return f"gk_{ISSUED.key_id}_{flipped}"


# ── the allowed path ──────────────────────────────────────────────────────────────────────


def test_valid_key_is_authenticated() -> None:
    result = auth()
    assert result.ok
    assert result.reason is None


def test_valid_key_fills_key_id_credential_and_principal() -> None:
    result = auth()
    assert (result.key_id, result.credential, result.principal) == (
        ISSUED.key_id,
        CREDENTIAL,
        PRINCIPAL,
    )


def test_key_without_expiry_is_authenticated_far_in_the_future() -> None:
    assert auth(credential=replace(CREDENTIAL, expires_at=None), now=NOW * 100).ok


def test_key_just_before_expiry_is_authenticated() -> None:
    assert auth(now=EXPIRES - 0.001).ok


# ── missing and malformed ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_gives_credential_missing(token: str | None) -> None:
    assert auth(token).reason is Reason.CREDENTIAL_MISSING


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_attributes_nothing(token: str | None) -> None:
    result = auth(token)
    assert (result.key_id, result.credential, result.principal) == (None, None, None)


@pytest.mark.parametrize(
    "token",
    ["Bearer " + TOKEN, TOKEN[:-1], "sk-abc", " ", TOKEN.replace("gk_", "gk-", 1)],
    ids=["bearer-prefix", "truncated", "foreign", "blank", "wrong-separator"],
)
def test_malformed_token_gives_credential_malformed(token: str) -> None:
    assert auth(token).reason is Reason.CREDENTIAL_MALFORMED


def test_malformed_token_attributes_nothing() -> None:
    result = auth("not-a-key")
    assert (result.key_id, result.credential, result.principal) == (None, None, None)


# ── unknown id and bad secret: the presented id only ───────────────────────────────────────


def test_unknown_key_id_gives_credential_unknown() -> None:
    assert auth(issue_key(PEPPER).token.reveal()).reason is Reason.CREDENTIAL_UNKNOWN


def test_unknown_key_id_keeps_only_the_presented_id() -> None:
    stranger = issue_key(PEPPER)
    result = auth(stranger.token.reveal())
    assert (result.key_id, result.credential, result.principal) == (stranger.key_id, None, None)


def test_wrong_secret_gives_credential_bad_secret() -> None:
    assert auth(other_secret_token()).reason is Reason.CREDENTIAL_BAD_SECRET


def test_wrong_secret_keeps_only_the_presented_id() -> None:
    result = auth(other_secret_token())
    assert (result.key_id, result.credential, result.principal) == (ISSUED.key_id, None, None)


def test_right_secret_under_another_pepper_gives_credential_bad_secret() -> None:
    assert auth(pepper=bytes(32)).reason is Reason.CREDENTIAL_BAD_SECRET


def test_bad_secret_is_reported_even_when_the_key_is_also_revoked() -> None:
    # Without the secret, nothing about the credential's state may show through.
    result = auth(other_secret_token(), credential=replace(CREDENTIAL, revoked=True))
    assert result.reason is Reason.CREDENTIAL_BAD_SECRET


def test_unknown_and_bad_secret_refusals_have_the_same_shape() -> None:
    unknown = auth(issue_key(PEPPER).token.reveal())
    bad = auth(other_secret_token())
    assert (unknown.credential, unknown.principal, unknown.ok) == (
        bad.credential,
        bad.principal,
        bad.ok,
    )


# ── refusals after the secret matched: attributed ──────────────────────────────────────────


def test_revoked_key_gives_credential_revoked() -> None:
    assert auth(credential=replace(CREDENTIAL, revoked=True)).reason is Reason.CREDENTIAL_REVOKED


def test_revoked_key_refusal_is_attributed_to_credential_and_principal() -> None:
    revoked = replace(CREDENTIAL, revoked=True)
    result = auth(credential=revoked)
    assert (result.key_id, result.credential, result.principal) == (
        ISSUED.key_id,
        revoked,
        PRINCIPAL,
    )


def test_key_is_expired_at_exactly_expires_at() -> None:
    assert auth(now=EXPIRES).reason is Reason.CREDENTIAL_EXPIRED


def test_key_is_expired_after_expires_at() -> None:
    assert auth(now=EXPIRES + 1.0).reason is Reason.CREDENTIAL_EXPIRED


def test_expired_key_refusal_is_attributed_to_credential_and_principal() -> None:
    result = auth(now=EXPIRES)
    assert (result.credential, result.principal) == (CREDENTIAL, PRINCIPAL)


def test_revocation_is_reported_before_expiry() -> None:
    result = auth(credential=replace(CREDENTIAL, revoked=True), now=EXPIRES)
    assert result.reason is Reason.CREDENTIAL_REVOKED


def test_disabled_principal_gives_principal_inactive() -> None:
    disabled = replace(PRINCIPAL, status=Status.DISABLED)
    assert auth(principal=disabled).reason is Reason.PRINCIPAL_INACTIVE


def test_disabled_principal_refusal_is_attributed_to_credential_and_principal() -> None:
    disabled = replace(PRINCIPAL, status=Status.DISABLED)
    result = auth(principal=disabled)
    assert (result.credential, result.principal) == (CREDENTIAL, disabled)


def test_principal_missing_from_directory_gives_principal_inactive() -> None:
    assert auth(principal=None).reason is Reason.PRINCIPAL_INACTIVE


def test_principal_missing_from_directory_is_attributed_to_the_credential() -> None:
    result = auth(principal=None)
    assert (result.credential, result.principal) == (CREDENTIAL, None)


def test_address_outside_the_key_networks_gives_credential_network() -> None:
    limited = replace(CREDENTIAL, networks=(ipaddress.ip_network("192.168.0.0/16"),))
    assert auth(credential=limited).reason is Reason.CREDENTIAL_NETWORK


def test_network_refusal_is_attributed_to_credential_and_principal() -> None:
    limited = replace(CREDENTIAL, networks=(ipaddress.ip_network("192.168.0.0/16"),))
    result = auth(credential=limited)
    assert (result.credential, result.principal) == (limited, PRINCIPAL)


def test_address_inside_one_of_the_key_networks_is_authenticated() -> None:
    limited = replace(
        CREDENTIAL,
        networks=(ipaddress.ip_network("192.168.0.0/16"), ipaddress.ip_network("10.0.0.0/8")),
    )
    assert auth(credential=limited).ok


def test_ipv6_address_inside_an_ipv6_network_is_authenticated() -> None:
    limited = replace(CREDENTIAL, networks=(ipaddress.ip_network("2001:db8::/32"),))
    assert auth(credential=limited, address=V6).ok


def test_ipv6_address_is_refused_by_an_ipv4_only_key() -> None:
    limited = replace(CREDENTIAL, networks=(ipaddress.ip_network("0.0.0.0/0"),))
    assert auth(credential=limited, address=V6).reason is Reason.CREDENTIAL_NETWORK


def test_ipv4_address_is_refused_by_an_ipv6_only_key() -> None:
    limited = replace(CREDENTIAL, networks=(ipaddress.ip_network("::/0"),))
    assert auth(credential=limited, address=V4).reason is Reason.CREDENTIAL_NETWORK


def test_key_without_networks_allows_ipv6() -> None:
    assert auth(address=V6).ok


def test_inactive_principal_is_reported_before_network() -> None:
    result = auth(
        principal=replace(PRINCIPAL, status=Status.DISABLED),
        credential=replace(CREDENTIAL, networks=(ipaddress.ip_network("192.168.0.0/16"),)),
    )
    assert result.reason is Reason.PRINCIPAL_INACTIVE


def test_refusal_is_not_ok() -> None:
    assert not auth(now=EXPIRES).ok
