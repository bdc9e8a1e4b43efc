"""Tests for ``garrison.gateway.fields``: only documented (or admin-allowed) request fields
reach the upstream; ``metadata`` only in its documented shape; what is dropped is counted."""

from __future__ import annotations

from typing import Any

import pytest

from garrison.domain import UpstreamApi
from garrison.domain.request_fields import NEVER_FORWARDED
from garrison.gateway.apis import REDIRECT_FIELDS
from garrison.gateway.fields import (
    DOCUMENTED,
    DROPPED_NAME_MAX_CHARS,
    MAX_DROPPED_NAMES,
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_CHARS,
    Dropped,
    forward_fields,
)

OPENAI, ANTHROPIC = UpstreamApi.OPENAI, UpstreamApi.ANTHROPIC
APIS = {"chat": OPENAI, "completions": OPENAI, "embeddings": OPENAI, "messages": ANTHROPIC}
# The fields a LiteLLM or vLLM upstream acts on that the old deny-list let through.
HOSTILE = {
    "user_config": {"model_list": [{"api_base": "http://evil"}]},
    "fallbacks": [{"model": "x", "api_base": "http://evil"}],
    "API_BASE": "http://evil",
    "model_list": [{"litellm_params": {"api_base": "http://evil"}}],
    "chat_template": "{{ system_prompt_override }}",
}


def forward(
    kind: str, body: dict[str, Any], extra: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], Dropped]:
    return forward_fields(kind, APIS[kind], body, extra)


def test_redirect_fields_are_never_forwarded_and_never_documented() -> None:
    assert REDIRECT_FIELDS <= NEVER_FORWARDED
    assert not any(REDIRECT_FIELDS & fields for fields in DOCUMENTED.values())


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_every_documented_field_is_forwarded(kind: str) -> None:
    body = {name: 1 for name in DOCUMENTED[kind] if name != "metadata"}
    out, dropped = forward(kind, body)
    assert (out, dropped.count) == (body, 0)


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_hostile_fields_are_dropped_and_named(kind: str) -> None:
    out, dropped = forward(kind, {"model": "m", **HOSTILE})
    assert out == {"model": "m"}
    assert sorted(dropped.names) == sorted(HOSTILE)
    assert dropped.count == 5  # what request.allowed records (payloads.RequestAllowed)


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_an_unknown_field_is_dropped(kind: str) -> None:
    assert "frobnicate" not in forward(kind, {"model": "m", "frobnicate": 1})[0]


def test_nothing_dropped_records_nothing() -> None:
    dropped = forward("chat", {"model": "m", "messages": []})[1]
    assert (dropped.count, dropped.names) == (0, [])


def test_an_allowed_extra_field_is_forwarded() -> None:
    out, _ = forward("chat", {"model": "m", "top_k": 40, "min_p": 0.1}, frozenset({"top_k"}))
    assert out == {"model": "m", "top_k": 40}


def test_an_extra_field_of_another_model_is_dropped() -> None:
    assert "top_k" not in forward("chat", {"model": "m", "top_k": 40})[0]


@pytest.mark.parametrize("name", sorted(NEVER_FORWARDED - {"model"}))
def test_a_never_forwarded_field_is_dropped_even_when_allowed(name: str) -> None:
    out, dropped = forward("chat", {"model": "m", name: "x"}, frozenset({name}))
    assert (name in out, dropped.names) == (False, [name])


def test_top_k_is_documented_for_anthropic_only() -> None:
    assert "top_k" in forward("messages", {"model": "m", "top_k": 5})[0]
    assert "top_k" not in forward("chat", {"model": "m", "top_k": 5})[0]


def test_mcp_servers_is_not_forwarded_to_anthropic() -> None:
    out, _ = forward("messages", {"model": "m", "mcp_servers": [{"url": "http://evil"}]})
    assert "mcp_servers" not in out


# ── metadata ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "key",
    [
        "api_base",
        "API_BASE",
        "base_url",
        "model_group",
        "user_api_key",
        "x-proxy",
        "webhook_url",
        "org",
    ],
)
def test_redirect_like_openai_metadata_keys_are_removed(key: str) -> None:
    out, dropped = forward(
        "chat", {"model": "m", "metadata": {key: "http://evil", "ticket": "T-1"}}
    )
    assert out["metadata"] == {"ticket": "T-1"}
    assert dropped.names == [f"metadata.{key}"]


def test_openai_metadata_in_its_documented_shape_passes() -> None:
    metadata = {"ticket": "T-1", "team.name": "red"}
    assert forward("chat", {"model": "m", "metadata": metadata})[0]["metadata"] == metadata


def test_openai_metadata_values_must_be_short_strings() -> None:
    metadata = {
        "a": 1,
        "b": "x" * (METADATA_VALUE_MAX_CHARS + 1),
        "c": "x" * METADATA_VALUE_MAX_CHARS,
    }
    out, dropped = forward("chat", {"model": "m", "metadata": metadata})
    assert (list(out["metadata"]), dropped.names) == (["c"], ["metadata.a", "metadata.b"])


def test_openai_metadata_keys_are_bounded() -> None:
    ok, long = "k" * METADATA_KEY_MAX_CHARS, "k" * (METADATA_KEY_MAX_CHARS + 1)
    out, dropped = forward("chat", {"model": "m", "metadata": {ok: "v", long: "v"}})
    assert (list(out["metadata"]), dropped.count) == ([ok], 1)


def test_openai_metadata_keeps_at_most_the_documented_number_of_keys() -> None:
    metadata = {f"k{i}": "v" for i in range(METADATA_MAX_KEYS + 3)}
    out, dropped = forward("chat", {"model": "m", "metadata": metadata})
    assert (len(out["metadata"]), dropped.count) == (METADATA_MAX_KEYS, 3)


@pytest.mark.parametrize("value", ["api_base=http://evil", ["x"], 3, None])
def test_metadata_that_is_not_an_object_is_dropped(value: Any) -> None:
    out, dropped = forward("chat", {"model": "m", "metadata": value})
    assert ("metadata" in out, dropped.names) == (False, ["metadata"])


def test_anthropic_metadata_keeps_only_user_id() -> None:
    metadata = {"user_id": "u-1", "api_base": "http://evil", "extra": "x"}
    out, dropped = forward("messages", {"model": "m", "metadata": metadata})
    assert out["metadata"] == {"user_id": "u-1"}
    assert dropped.names == ["metadata.api_base", "metadata.extra"]


def test_metadata_is_not_documented_for_embeddings() -> None:
    assert "metadata" not in forward("embeddings", {"model": "m", "metadata": {"a": "b"}})[0]


# ── the record of what was dropped is bounded ──────────────────────────────────────────────
def test_dropped_names_are_bounded_but_counted_exactly() -> None:
    body = {"model": "m", **{f"f{i}": 1 for i in range(MAX_DROPPED_NAMES + 50)}}
    _, dropped = forward("chat", body)
    assert (len(dropped.names), dropped.count) == (MAX_DROPPED_NAMES, MAX_DROPPED_NAMES + 50)


def test_a_dropped_name_is_cut_and_made_printable() -> None:
    _, dropped = forward("chat", {"model": "m", "a\x00\n" + "b" * 500: 1})
    (name,) = dropped.names
    assert len(name) == DROPPED_NAME_MAX_CHARS and name.isprintable()
