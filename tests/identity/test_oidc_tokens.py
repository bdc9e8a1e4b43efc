"""ID-token validation and its attacks: each forged or stale token is refused by name.

These tokens are made here with joserfc and the test's own keys: the unit under test is the
validator. The same attacks against the real provider and the running gateway are in
tests/e2e/test_oidc_signin.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from garrison.identity.oidc_config import OidcProvider
from garrison.identity.oidc_tokens import (
    ID_TOKEN_MAX_AGE_S,
    ID_TOKEN_MAX_BYTES,
    ID_TOKEN_SKEW_S,
    IdTokenRejected,
    check_header,
    has_mfa,
    unverified_header_and_issuer,
    validate_id_token,
)

ISSUER = "https://idp.example.com"
NOW = 1_800_000_000.0
PROVIDER = OidcProvider(issuer=ISSUER, client_id="garrison-cli")
KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"})
NONCE = "jkt123.random"


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "garrison-cli",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "auth_time": int(NOW) - 5,
        "nonce": NONCE,
        "amr": ["pwd", "otp"],
        "acr": "urn:mfa",
        "groups": ["garrison-admins"],
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(body: dict[str, Any], *, key: Any = KEY, alg: str = "RS256", **header: Any) -> str:
    return jwt.encode({"alg": alg, "kid": "k1", **header}, body, key)


def check(token: str, *, key: Any = KEY, nonce: str = NONCE, provider: OidcProvider = PROVIDER):
    return validate_id_token(
        token, provider=provider, key=key, now=NOW, nonce_ok=lambda n: n == nonce
    )


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def reason_of(token: str, **kw: Any) -> str:
    with pytest.raises(IdTokenRejected) as caught:
        check(token, **kw)
    return caught.value.reason


def test_a_valid_token_gives_its_claims() -> None:
    token = check(sign(claims()))
    assert (token.issuer, token.subject) == (ISSUER, "user-1")
    assert token.groups == frozenset({"garrison-admins"})
    assert token.amr == ("pwd", "otp") and has_mfa(token, PROVIDER)
    assert token.auth_time == NOW - 5


def test_alg_none_is_refused() -> None:
    token = f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(claims())}."
    assert reason_of(token) == "alg_not_allowed"


def test_hs256_signed_with_the_providers_public_key_is_refused() -> None:
    # Forged by hand: joserfc itself will not make an oct key of a public key.
    public_pem = KEY.as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'kid': 'k1'})}.{b64(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert reason_of(forged) == "alg_not_allowed"
    # Even a provider configured (wrongly) to list HS256 cannot be made to accept it: the
    # configuration refuses symmetric algorithms, and the check refuses them again.
    lax = OidcProvider(issuer=ISSUER, client_id="garrison-cli", algorithms=("HS256",))
    with pytest.raises(IdTokenRejected):
        check(forged, provider=lax)


def test_a_token_signed_by_another_key_is_refused() -> None:
    other = RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"})
    assert reason_of(sign(claims(), key=other)) == "signature"


def test_a_key_carried_in_the_header_is_never_used() -> None:
    attacker = ECKey.generate_key("P-256", private=True)
    for pointer in ("jwk", "jku", "x5u", "x5c"):
        value: Any = {
            "jwk": attacker.as_dict(private=False),
            "x5c": ["MIIB"],
        }.get(pointer, "https://evil.example/keys")
        token = sign(claims(), **{pointer: value})
        assert reason_of(token) == "key_in_header", pointer


def test_kid_injection_is_only_ever_a_lookup() -> None:
    for kid in ("../../../../dev/null", "' OR '1'='1", "x" * 300, ""):
        header = {"alg": "RS256", "kid": kid}
        if not 0 < len(kid) <= 256:
            with pytest.raises(IdTokenRejected):
                check_header(header, PROVIDER)
        else:
            assert check_header(header, PROVIDER) == kid  # a dict key; no file, no query


def test_expired_token_is_refused() -> None:
    late = claims(exp=int(NOW) - ID_TOKEN_SKEW_S - 1, iat=int(NOW) - 400)
    assert reason_of(sign(late)) == "claim_exp"


def test_expiry_within_the_skew_is_accepted() -> None:
    check(sign(claims(exp=int(NOW) - ID_TOKEN_SKEW_S + 5)))


def test_not_yet_valid_token_is_refused() -> None:
    assert reason_of(sign(claims(nbf=int(NOW) + ID_TOKEN_SKEW_S + 10))) == "claim_nbf"
    assert reason_of(sign(claims(iat=int(NOW) + ID_TOKEN_SKEW_S + 10))) == "claim_iat"


def test_a_token_issued_long_ago_is_refused_even_if_unexpired() -> None:
    old = claims(iat=int(NOW) - ID_TOKEN_MAX_AGE_S - ID_TOKEN_SKEW_S - 1, exp=int(NOW) + 3600)
    assert reason_of(sign(old)) == "too_old"


def test_wrong_issuer_is_refused() -> None:
    assert reason_of(sign(claims(iss="https://evil.example.com"))) == "claim_iss"


def test_wrong_audience_is_refused() -> None:
    assert reason_of(sign(claims(aud="another-app"))) == "claim_aud"


def test_several_audiences_need_azp_naming_garrison() -> None:
    both = ["garrison-cli", "another-app"]
    assert reason_of(sign(claims(aud=both))) == "claim_azp"
    assert reason_of(sign(claims(aud=both, azp="another-app"))) == "claim_azp"
    check(sign(claims(aud=both, azp="garrison-cli")))


def test_wrong_azp_is_refused_even_with_one_audience() -> None:
    assert reason_of(sign(claims(azp="another-app"))) == "claim_azp"


def test_a_token_for_another_nonce_is_refused() -> None:
    assert reason_of(sign(claims(nonce="otherkey.random"))) == "nonce"
    assert reason_of(sign(claims(nonce=None))) == "nonce"


def test_access_tokens_and_proofs_are_not_id_tokens() -> None:
    for typ in ("at+jwt", "dpop+jwt", "logout+jwt"):
        assert reason_of(sign(claims(), typ=typ)) == "wrong_type"


def test_oversized_tokens_are_refused_before_parsing() -> None:
    with pytest.raises(IdTokenRejected) as caught:
        unverified_header_and_issuer("a" * (ID_TOKEN_MAX_BYTES + 1))
    assert caught.value.reason == "too_large"


def test_garbage_is_malformed() -> None:
    for junk in ("", "a.b", "a.b.c", f"{b64({'alg': 'RS256'})}.{b64({'no': 'iss'})}.x"):
        with pytest.raises(IdTokenRejected) as caught:
            unverified_header_and_issuer(junk)
        assert caught.value.reason == "malformed"


def test_a_missing_auth_time_never_counts_as_fresh() -> None:
    assert check(sign(claims(auth_time=None))).auth_time == 0.0


def test_mfa_is_read_from_amr_or_a_configured_acr() -> None:
    assert not has_mfa(check(sign(claims(amr=["pwd"], acr="urn:pwd"))), PROVIDER)
    by_acr = OidcProvider(issuer=ISSUER, client_id="garrison-cli", mfa_acr=("urn:mfa",))
    assert has_mfa(check(sign(claims(amr=["pwd"])), provider=by_acr), by_acr)


def test_the_public_refusal_says_nothing_about_the_cause() -> None:
    with pytest.raises(IdTokenRejected) as caught:
        check(sign(claims(aud="another-app")))
    assert caught.value.public_message == IdTokenRejected.default_message
    assert "aud" not in caught.value.public_message


def test_a_token_without_nonce_passes_only_where_the_provider_allows_it() -> None:
    assert reason_of(sign(claims(nonce=None))) == "nonce"
    device = OidcProvider(issuer=ISSUER, client_id="garrison-cli", require_nonce=False)
    assert check(sign(claims(nonce=None)), provider=device).nonce == ""
    # A nonce that is present must still name the key, whatever the setting.
    with pytest.raises(IdTokenRejected):
        check(sign(claims(nonce="other.key")), provider=device)


def test_subjects_longer_than_the_limit_are_refused() -> None:
    from garrison.identity.oidc_tokens import SUBJECT_MAX_CHARS

    check(sign(claims(sub="s" * SUBJECT_MAX_CHARS)))
    assert reason_of(sign(claims(sub="s" * (SUBJECT_MAX_CHARS + 1)))) == "claim_sub"


def test_the_id_token_replay_cache_is_bounded_and_fails_closed() -> None:
    from garrison.admin.session_api import ID_TOKEN_REPLAY_MAX, SignIn
    from garrison.identity.dpop import ReplayVerdict
    from garrison.identity.oidc_config import OidcSettings

    seen = SignIn(OidcSettings(), {}).seen
    assert getattr(seen, "max_entries", None) == ID_TOKEN_REPLAY_MAX
    seen.max_entries = 2  # type: ignore[attr-defined]
    assert seen.first_use("a", expires_at=NOW + 60, now=NOW) is ReplayVerdict.NEW
    assert seen.first_use("a", expires_at=NOW + 60, now=NOW) is ReplayVerdict.REPLAYED
    assert seen.first_use("b", expires_at=NOW + 60, now=NOW) is ReplayVerdict.NEW
    assert seen.first_use("c", expires_at=NOW + 60, now=NOW) is ReplayVerdict.FULL
    # Expired digests make room again.
    assert seen.first_use("c", expires_at=NOW + 200, now=NOW + 61) is ReplayVerdict.NEW
