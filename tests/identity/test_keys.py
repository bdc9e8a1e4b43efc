"""Unit and property tests for the Garrison API key format (``garrison.identity.keys``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.identity.keys import (
    KEY_ID_BYTES,
    KEY_MAX_CHARS,
    KEY_PREFIX,
    KEY_SECRET_BYTES,
    PEPPERS_KEYED,
    hash_secret,
    issue_key,
    parse_key,
)

PEPPER = bytes(range(32))
OTHER_PEPPER = bytes(range(1, 33))
KEY_ID = "0123456789abcdef"
SECRET = "A" * 21 + "-" * 11 + "_" * 11  # 43 characters of the base64url alphabet
GOOD = f"gk_{KEY_ID}_{SECRET}"

# The specification of a well-formed key, written independently of the module under test.
_WELL_FORMED = re.compile(r"gk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def test_issued_key_parses_back_to_its_id() -> None:
    issued = issue_key(PEPPER)
    parsed = parse_key(issued.token.reveal())
    assert parsed is not None
    assert parsed.key_id == issued.key_id


def test_issued_key_stored_hash_matches_its_secret() -> None:
    issued = issue_key(PEPPER)
    parsed = parse_key(issued.token.reveal())
    assert parsed is not None
    assert hash_secret(PEPPER, parsed.key_id, parsed.secret.reveal()) == issued.secret_hash


def test_issued_key_has_the_gk_prefix() -> None:
    assert issue_key(PEPPER).token.reveal().startswith(f"{KEY_PREFIX}_")


def test_issued_key_id_is_64_bits_of_hex() -> None:
    key_id = issue_key(PEPPER).key_id
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    assert len(bytes.fromhex(key_id)) == KEY_ID_BYTES == 8


def test_issued_secret_is_43_base64url_chars_carrying_256_bits() -> None:
    parsed = parse_key(issue_key(PEPPER).token.reveal())
    assert parsed is not None
    secret = parsed.secret.reveal()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    assert len(base64.urlsafe_b64decode(secret + "=")) * 8 == KEY_SECRET_BYTES * 8 == 256


def test_two_issued_keys_differ() -> None:
    first, second = issue_key(PEPPER), issue_key(PEPPER)
    assert first.key_id != second.key_id
    assert first.token != second.token


def test_issued_token_repr_hides_the_secret() -> None:
    issued = issue_key(PEPPER)
    assert issued.token.reveal() not in repr(issued)


def test_hash_secret_is_hmac_sha256_of_id_and_secret_under_the_pepper() -> None:
    expected = hmac.new(PEPPER, f"{KEY_ID}:{SECRET}".encode(), hashlib.sha256).digest()
    assert hash_secret(PEPPER, KEY_ID, SECRET) == expected


@pytest.mark.parametrize("length", [0, 1, 32, 63, 64, 65, 200])
def test_hash_secret_is_hmac_sha256_for_any_pepper_length(length: int) -> None:
    # The keyed hashes are computed once per pepper: shorter, block-sized and longer peppers
    # (RFC 2104 hashes a key longer than the block) all give what hmac.new gives.
    pepper = bytes((n * 7 + length) % 256 for n in range(length))
    expected = hmac.new(pepper, f"{KEY_ID}:{SECRET}".encode(), hashlib.sha256).digest()
    assert hash_secret(pepper, KEY_ID, SECRET) == expected


def test_hash_secret_stays_right_past_the_peppers_kept_keyed() -> None:
    peppers = [bytes([n]) * 32 for n in range(PEPPERS_KEYED * 2 + 1)]
    for _ in range(2):  # the second pass finds the first peppers no longer kept
        for pepper in peppers:
            expected = hmac.new(pepper, f"{KEY_ID}:{SECRET}".encode(), hashlib.sha256).digest()
            assert hash_secret(pepper, KEY_ID, SECRET) == expected


def test_hash_secret_is_32_bytes() -> None:
    assert len(hash_secret(PEPPER, KEY_ID, SECRET)) == 32


def test_same_secret_under_another_key_id_hashes_differently() -> None:
    assert hash_secret(PEPPER, KEY_ID, SECRET) != hash_secret(PEPPER, "fedcba9876543210", SECRET)


def test_same_secret_under_another_pepper_hashes_differently() -> None:
    assert hash_secret(PEPPER, KEY_ID, SECRET) != hash_secret(OTHER_PEPPER, KEY_ID, SECRET)


def test_hash_secret_is_deterministic() -> None:
    assert hash_secret(PEPPER, KEY_ID, SECRET) == hash_secret(PEPPER, KEY_ID, SECRET)


def test_well_formed_key_parses_into_id_and_secret() -> None:
    parsed = parse_key(GOOD)
    assert parsed is not None
    assert (parsed.key_id, parsed.secret.reveal()) == (KEY_ID, SECRET)


@pytest.mark.parametrize(
    "token",
    [
        f"sk_{KEY_ID}_{SECRET}",
        f"GK_{KEY_ID}_{SECRET}",
        f"gk-{KEY_ID}_{SECRET}",
        f"{KEY_ID}_{SECRET}",
        f"Bearer gk_{KEY_ID}_{SECRET}",
    ],
)
def test_parse_key_rejects_a_wrong_prefix(token: str) -> None:
    assert parse_key(token) is None


@pytest.mark.parametrize("key_id", [KEY_ID[:-1], KEY_ID + "0", ""])
def test_parse_key_rejects_a_wrong_id_length(key_id: str) -> None:
    assert parse_key(f"gk_{key_id}_{SECRET}") is None


@pytest.mark.parametrize("secret", [SECRET[:-1], SECRET + "A", ""])
def test_parse_key_rejects_a_wrong_secret_length(secret: str) -> None:
    assert parse_key(f"gk_{KEY_ID}_{secret}") is None


@pytest.mark.parametrize("key_id", ["0123456789ABCDEF", "0123456789abcdeg", "0123456789abcde-"])
def test_parse_key_rejects_an_id_outside_lowercase_hex(key_id: str) -> None:
    assert parse_key(f"gk_{key_id}_{SECRET}") is None


@pytest.mark.parametrize("bad", ["+", "/", "=", " ", ".", "é", "\x00"])
def test_parse_key_rejects_a_secret_outside_base64url(bad: str) -> None:
    assert parse_key(f"gk_{KEY_ID}_{SECRET[:-1]}{bad}") is None


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t", "\x00"])
def test_parse_key_rejects_trailing_characters(suffix: str) -> None:
    assert parse_key(GOOD + suffix) is None


@pytest.mark.parametrize("prefix", ["\n", " ", "\t"])
def test_parse_key_rejects_leading_characters(prefix: str) -> None:
    assert parse_key(prefix + GOOD) is None


def test_parse_key_rejects_over_long_input() -> None:
    assert parse_key(GOOD + "A" * (KEY_MAX_CHARS + 1)) is None


def test_parse_key_rejects_huge_input() -> None:
    assert parse_key("gk_" + "a" * 10_000_000) is None


def test_parse_key_rejects_empty_string() -> None:
    assert parse_key("") is None


@given(st.text(max_size=200))
def test_random_text_parses_only_when_well_formed(token: str) -> None:
    parsed = parse_key(token)
    assert (parsed is not None) == bool(_WELL_FORMED.fullmatch(token))


@given(
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        min_size=43,
        max_size=43,
    ),
)
def test_every_well_formed_key_parses_to_its_parts(key_id: str, secret: str) -> None:
    parsed = parse_key(f"gk_{key_id}_{secret}")
    assert parsed is not None
    assert (parsed.key_id, parsed.secret.reveal()) == (key_id, secret)


@given(
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        min_size=43,
        max_size=43,
    ),
    st.text(min_size=1, max_size=5),
)
def test_well_formed_key_with_anything_appended_does_not_parse(
    key_id: str, secret: str, tail: str
) -> None:
    assert parse_key(f"gk_{key_id}_{secret}{tail}") is None
