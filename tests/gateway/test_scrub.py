"""Tests for ``garrison.gateway.scrub``: upstream error messages made safe to show."""

from __future__ import annotations

import pytest

from garrison.gateway.limits import MAX_ERROR_MESSAGE_CHARS
from garrison.gateway.scrub import scrub_message


def scrub(text: str, replace: dict[str, str] | None = None) -> str:
    return scrub_message(text, replace=replace or {})


# ── what must go ──────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.3.7:8000/v1/chat/completions",
        "https://gpu-node-7.internal.example.com/v1",
        "http://localhost:8000/v1",
        "redis://cache:6379/0",
    ],
)
def test_url_is_removed(url: str) -> None:
    out = scrub(f"could not reach {url} (connection refused)")
    assert url not in out
    assert "[url]" in out


@pytest.mark.parametrize("address", ["10.0.3.7", "192.168.1.20:8000", "172.16.0.1"])
def test_ipv4_address_is_removed(address: str) -> None:
    out = scrub(f"connection to {address} refused")
    assert (address.split(":")[0] not in out, "[address]" in out) == (True, True)


@pytest.mark.parametrize(
    "address",
    [
        "2001:db8:0:0:0:0:0:1",
        "fe80:0:0:0:200:f8ff:fe21:67cf",
        "[2001:db8:85a3:0:0:8a2e:370:7334]:8000",
    ],
)
def test_full_ipv6_address_is_removed(address: str) -> None:
    out = scrub(f"connection to {address} refused")
    assert "[address]" in out
    assert "db8" not in out and "f8ff" not in out and "8a2e" not in out


@pytest.mark.parametrize("address", ["2001:db8::1", "fe80::1", "fd00:1234::42", "::1"])
def test_compressed_ipv6_address_is_removed(address: str) -> None:
    out = scrub(f"connection to {address} refused")
    assert address not in out


@pytest.mark.parametrize(
    "host", ["gpu-node-7.internal.example.com", "vllm.corp.local:8000", "api.openai.com"]
)
def test_host_name_is_removed(host: str) -> None:
    out = scrub(f"upstream {host} answered 500")
    assert (host not in out, "[host]" in out) == (True, True)


@pytest.mark.parametrize(
    "ident",
    [
        "org-AbCdEf123456",
        "sk-proj-abcdef123456",
        "sk-abcdefghijkl",
        "acct_1234567890",
        "key-zzzzzz",
    ],
)
def test_account_and_key_ids_are_removed(ident: str) -> None:
    out = scrub(f"rate limit reached for {ident} on requests")
    assert (ident not in out, "[redacted]" in out) == (True, True)


def test_long_opaque_token_is_removed() -> None:
    token = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7"
    out = scrub(f"trace {token} failed")
    assert (token not in out, "[redacted]" in out) == (True, True)


def test_upstream_model_name_is_replaced_by_the_client_name() -> None:
    out = scrub(
        "The model meta-llama/Llama-3.1-70B-Instruct does not exist",
        {"meta-llama/Llama-3.1-70B-Instruct": "assistant"},
    )
    assert out == "The model assistant does not exist"


def test_every_occurrence_of_a_replaced_name_is_replaced() -> None:
    out = scrub("qwen-internal failed; qwen-internal is busy", {"qwen-internal": "chat"})
    assert "qwen-internal" not in out


def test_empty_replace_key_is_ignored() -> None:
    assert scrub("plain message", {"": "X"}) == "plain message"


def test_long_message_is_truncated_at_the_limit() -> None:
    out = scrub("word " * 1000)
    assert out[:MAX_ERROR_MESSAGE_CHARS] == ("word " * 1000)[:MAX_ERROR_MESSAGE_CHARS]
    assert len(out) <= MAX_ERROR_MESSAGE_CHARS + 1


def test_truncated_message_ends_with_an_ellipsis() -> None:
    assert scrub("word " * 1000).endswith("…")


def test_message_at_the_limit_is_not_truncated() -> None:
    text = "a " * (MAX_ERROR_MESSAGE_CHARS // 2)
    assert scrub(text) == text


def test_truncation_happens_after_scrubbing() -> None:
    # A secret straddling the cut must not survive as a prefix.
    text = "x " * (MAX_ERROR_MESSAGE_CHARS // 2 - 5) + "sk-abcdefghijklmnopqrstuvwxyz"
    assert "sk-abc" not in scrub(text)


# ── what must stay ────────────────────────────────────────────────────────────────────────


def test_plain_context_length_message_is_kept() -> None:
    text = "maximum context length is 4096 tokens"
    assert scrub(text) == text


def test_openai_style_context_length_message_is_kept() -> None:
    text = (
        "This model's maximum context length is 4096 tokens. However, you requested "
        "5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the "
        "length of the messages or completion."
    )
    assert scrub(text) == text


def test_context_length_message_with_replaced_model_name_stays_readable() -> None:
    out = scrub(
        "llama-3-8b-internal: maximum context length is 8192 tokens, got 9000",
        {"llama-3-8b-internal": "assistant"},
    )
    assert out == "assistant: maximum context length is 8192 tokens, got 9000"


def test_version_like_numbers_are_kept() -> None:
    assert scrub("temperature must be between 0.0 and 2.0") == (
        "temperature must be between 0.0 and 2.0"
    )
