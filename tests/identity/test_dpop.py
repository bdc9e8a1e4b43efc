"""Tests for ``garrison.identity.dpop``: proofs made by the client helper, and the attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from garrison.domain import Reason
from garrison.identity.dpop import (
    DPOP_CLOCK_SKEW_S,
    DPOP_JTI_MAX_CHARS,
    DPOP_PROOF_MAX_AGE_S,
    DPOP_PROOF_MAX_CHARS,
    InvalidProof,
    MemoryReplayCache,
    ReplayVerdict,
    access_token_hash,
    generate_proof_key,
    make_proof,
    normalize_htu,
    proof_key_thumbprint,
    verify_proof,
)

NOW = 1_700_000_000.0
URL = "https://garrison.example/v1/chat/completions"
TOKEN = "header.payload.signature"
KEY = generate_proof_key()


def _verify(proof: str | None, **kw: Any) -> str:
    args: dict[str, Any] = {
        "method": "POST",
        "url": URL,
        "now": NOW,
        "access_token": TOKEN,
        "replay": MemoryReplayCache(),
    }
    args.update(kw)
    return verify_proof(proof, **args)


def _reason(proof: str | None, **kw: Any) -> Reason:
    with pytest.raises(InvalidProof) as caught:
        _verify(proof, **kw)
    return caught.value.reason


def _proof(**kw: Any) -> str:
    args: dict[str, Any] = {"method": "POST", "url": URL, "now": NOW, "access_token": TOKEN}
    args.update(kw)
    return make_proof(KEY, **args)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**change: Any) -> dict[str, Any]:
    claims = {
        "jti": "j-1",
        "htm": "POST",
        "htu": URL,
        "iat": int(NOW),
        "ath": access_token_hash(TOKEN),
    }
    claims.update(change)
    return claims


def _signed(header: dict[str, Any], claims: dict[str, Any], key: Any = KEY) -> str:
    return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def _header(key: Any = KEY, alg: str = "ES256", **change: Any) -> dict[str, Any]:
    header = {"alg": alg, "typ": "dpop+jwt", "jwk": key.as_dict(private=False)}
    header.update(change)
    return header


def test_a_proof_returns_its_keys_thumbprint() -> None:
    assert _verify(_proof()) == proof_key_thumbprint(KEY) == KEY.thumbprint()


def test_an_ed25519_proof_is_accepted() -> None:
    key = OKPKey.generate_key("Ed25519")
    proof = make_proof(key, method="POST", url=URL, now=NOW, access_token=TOKEN)
    assert _verify(proof) == key.thumbprint()


def test_the_challenge_names_every_algorithm_taken() -> None:
    from garrison.identity.dpop import DPOP_ALGS
    from garrison.identity.token_auth import DPOP_CHALLENGE

    assert f'DPoP error="invalid_token", algs="{" ".join(DPOP_ALGS)}"' == DPOP_CHALLENGE
    assert DPOP_CHALLENGE == 'DPoP error="invalid_token", algs="ES256 Ed25519"'


def test_a_proof_without_a_token_needs_no_ath() -> None:
    assert _verify(_proof(access_token=None), access_token=None)


def test_no_proof_is_refused() -> None:
    assert _reason(None) is Reason.DPOP_MISSING
    assert _reason("") is Reason.DPOP_MISSING


def test_a_replayed_proof_is_refused() -> None:
    replay = MemoryReplayCache()
    proof = _proof()
    _verify(proof, replay=replay)
    assert _reason(proof, replay=replay, now=NOW + 1) is Reason.DPOP_REPLAY


def test_the_same_jti_from_another_key_is_not_a_replay() -> None:
    # jti values are scoped by key: one client cannot burn another's.
    replay = MemoryReplayCache()
    other = generate_proof_key()
    _verify(_signed(_header(), _claims()), replay=replay)
    assert _verify(_signed(_header(other), _claims(), other), replay=replay)


def test_a_proof_for_another_method_is_refused() -> None:
    assert _reason(_proof(method="GET")) is Reason.DPOP_METHOD


@pytest.mark.parametrize(
    "url",
    [
        "https://garrison.example/v1/models",
        "https://evil.example/v1/chat/completions",
        "http://garrison.example/v1/chat/completions",
        "https://garrison.example:8443/v1/chat/completions",
    ],
)
def test_a_proof_for_another_url_is_refused(url: str) -> None:
    assert _reason(_proof(url=url)) is Reason.DPOP_URL


def test_query_fragment_case_and_default_port_do_not_matter() -> None:
    proof = _signed(_header(), _claims(htu="HTTPS://Garrison.Example:443/v1/chat/completions"))
    assert _verify(proof, url=URL + "?stream=true#x")


def test_a_relative_htu_is_refused() -> None:
    assert _reason(_signed(_header(), _claims(htu="/v1/chat/completions"))) is Reason.DPOP_URL


def test_a_proof_older_than_the_window_is_refused() -> None:
    old = _proof(now=NOW - DPOP_PROOF_MAX_AGE_S - 1)
    assert _reason(old) is Reason.DPOP_IAT
    assert _verify(_proof(now=NOW - DPOP_PROOF_MAX_AGE_S))


def test_a_proof_from_the_future_is_refused() -> None:
    assert _reason(_proof(now=NOW + DPOP_CLOCK_SKEW_S + 1)) is Reason.DPOP_IAT
    assert _verify(_proof(now=NOW + DPOP_CLOCK_SKEW_S))


def test_a_proof_for_another_token_is_refused() -> None:
    assert _reason(_proof(access_token="another.token.value")) is Reason.DPOP_ATH
    assert _reason(_proof(access_token=None)) is Reason.DPOP_ATH


def test_alg_none_is_refused() -> None:
    header = _header(alg="none")
    body = json.dumps(_claims()).encode()
    proof = f"{_b64(json.dumps(header).encode())}.{_b64(body)}."
    assert _reason(proof) is Reason.DPOP_ALG


def test_hs256_signed_with_the_embedded_public_key_is_refused() -> None:
    header = _header(alg="HS256")
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims()).encode())}"
    secret = KEY.as_pem(private=False)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert _reason(f"{signing_input}.{_b64(mac)}") is Reason.DPOP_ALG


def test_an_rsa_proof_is_refused() -> None:
    rsa = RSAKey.generate_key(2048)
    # A 2048-bit jwk already passes the header size joserfc parses at all...
    assert _reason(_signed(_header(rsa, alg="RS256"), _claims(), rsa)) is Reason.DPOP_MALFORMED
    # ...and RS256 is not on the list whatever the key.
    header = _b64(json.dumps(_header(alg="RS256")).encode())
    proof = f"{header}.{_b64(json.dumps(_claims()).encode())}.{_b64(b'x' * 256)}"
    assert _reason(proof) is Reason.DPOP_ALG


def test_a_proof_carrying_the_private_key_is_refused() -> None:
    header = _header()
    header["jwk"] = KEY.as_dict(private=True)
    assert _reason(_signed(header, _claims())) is Reason.DPOP_KEY


def test_a_proof_without_a_key_is_refused() -> None:
    header = _header()
    del header["jwk"]
    assert _reason(_signed(header, _claims())) is Reason.DPOP_KEY


def test_a_key_of_the_wrong_curve_is_refused() -> None:
    p384 = ECKey.generate_key("P-384")
    header = _header(p384)
    # Signed by our P-256 key but naming a P-384 one: refused before any signature check.
    assert _reason(_signed(header, _claims())) is Reason.DPOP_KEY


def test_a_proof_signed_by_another_key_than_it_names_is_refused() -> None:
    other = generate_proof_key()
    assert _reason(_signed(_header(other), _claims())) is Reason.DPOP_BAD_SIGNATURE


def test_a_proof_of_another_type_is_refused() -> None:
    assert _reason(_signed(_header(typ="JWT"), _claims())) is Reason.DPOP_MALFORMED


@pytest.mark.parametrize(
    "change",
    [{"jti": ""}, {"jti": "j" * (DPOP_JTI_MAX_CHARS + 1)}, {"iat": "now"}, {"htm": 1}],
)
def test_bad_claims_are_refused(change: dict[str, Any]) -> None:
    assert _reason(_signed(_header(), _claims(**change))) is Reason.DPOP_MALFORMED


def test_a_proof_over_the_size_limit_is_not_parsed() -> None:
    assert _reason("a" * (DPOP_PROOF_MAX_CHARS + 1)) is Reason.DPOP_MALFORMED


def test_a_full_replay_cache_refuses_rather_than_forgets() -> None:
    replay = MemoryReplayCache(max_entries=2)
    assert replay.first_use("a", expires_at=NOW + 60, now=NOW) is ReplayVerdict.NEW
    assert replay.first_use("b", expires_at=NOW + 60, now=NOW) is ReplayVerdict.NEW
    assert replay.first_use("c", expires_at=NOW + 60, now=NOW) is ReplayVerdict.FULL
    assert replay.first_use("a", expires_at=NOW + 60, now=NOW) is ReplayVerdict.REPLAYED
    # Once entries expire there is room again.
    assert replay.first_use("c", expires_at=NOW + 200, now=NOW + 61) is ReplayVerdict.NEW
    assert len(replay) == 1


def test_a_full_cache_refuses_the_proof() -> None:
    replay = MemoryReplayCache(max_entries=1)
    _verify(_proof(), replay=replay)
    assert _reason(_proof(), replay=replay) is Reason.DPOP_REPLAY_FULL


def test_a_replay_is_remembered_for_as_long_as_the_proof_is_accepted() -> None:
    replay = MemoryReplayCache()
    proof = _proof()
    _verify(proof, replay=replay)
    # At the last instant the proof's iat is still in the window, it is still a replay.
    assert _reason(proof, replay=replay, now=NOW + DPOP_PROOF_MAX_AGE_S) is Reason.DPOP_REPLAY


def test_normalize_htu() -> None:
    assert normalize_htu("HTTP://A.example:80") == "http://a.example/"
    assert normalize_htu("https://a.example:8443/p?q#f") == "https://a.example:8443/p"
    assert normalize_htu("https://[::1]:443/x") == "https://[::1]/x"
    with pytest.raises(ValueError):
        normalize_htu("ftp://a.example/")


def test_the_caches_are_bounded_by_their_limits() -> None:
    from garrison.identity import dpop

    assert dpop.normalize_htu.cache_info().maxsize == dpop.DPOP_URL_CACHE_MAX
    assert dpop._public_key.cache_info().maxsize == dpop.DPOP_KEY_CACHE_MAX
    assert MemoryReplayCache().max_entries == dpop.DPOP_REPLAY_MAX


def test_a_jwk_that_is_not_json_is_a_bad_key() -> None:
    header = _header()
    header["jwk"] = {"kty": "EC", "crv": "P-256", "x": 10**30, "y": "y"}
    assert _reason(_signed(header, _claims())) is Reason.DPOP_KEY
