"""Which request fields reach the upstream: each API's documented fields, and nothing else.

A deny-list of redirect fields always misses one (``user_config``, ``fallbacks``,
``API_BASE``, ``model_list``, ``chat_template`` … a LiteLLM or vLLM upstream acts on them).
So the gateway forwards only the fields each API documents, plus the extra fields an admin
allowed for the model (``Model.extra_fields``: vLLM / llama.cpp sampling parameters). Every
other top-level field is dropped, and the call's audit record names what was dropped.
``metadata`` passes only in its documented shape, with redirect-like keys removed.

The lists were taken from the OpenAI API reference (chat completions, completions,
embeddings) and the Anthropic Messages API reference as of ``FIELDS_CHECKED``; the same
table is in docs/concepts.md. A field a newer API version adds is dropped until it is added
here (or allowed per model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from garrison.domain import UpstreamApi
from garrison.domain.request_fields import NEVER_FORWARDED

# The date the documented-field lists below were checked against the two API references.
FIELDS_CHECKED = "2025-06-01"

CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
COMPLETIONS_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "user",
    }
)
EMBEDDINGS_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
# ``mcp_servers`` (beta) is left out on purpose: it makes the upstream connect to URLs the
# caller chooses. ``container`` likewise names upstream-side state; allow it per model.
MESSAGES_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "metadata",
        "service_tier",
        "stop_sequences",
        "stream",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)
DOCUMENTED: dict[str, frozenset[str]] = {
    "chat": CHAT_FIELDS,
    "completions": COMPLETIONS_FIELDS,
    "embeddings": EMBEDDINGS_FIELDS,
    "messages": MESSAGES_FIELDS,
}

# OpenAI metadata: "up to 16 key-value pairs; keys up to 64 characters, values strings up to
# 512 characters" (the API reference's own bounds).
METADATA_MAX_KEYS = 16
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
# Anthropic metadata has one documented key; its value is an opaque id of up to 256 chars.
ANTHROPIC_METADATA_KEYS = frozenset({"user_id"})
ANTHROPIC_USER_ID_MAX_CHARS = 256
# A metadata key that looks like routing or a credential (LiteLLM reads some from metadata).
_REDIRECT_LIKE = re.compile(
    r"api|base|url|uri|host|endpoint|key|token|secret|credential|header|proxy|model|"
    r"fallback|config|deploy|provider|region|project|org|route|redirect|callback|webhook",
    re.IGNORECASE,
)
_METADATA_KEY = re.compile(rf"[A-Za-z0-9_.:-]{{1,{METADATA_KEY_MAX_CHARS}}}")

# Names of dropped fields kept in one audit record (the count is always exact).
MAX_DROPPED_NAMES = 20
# Characters of one dropped name kept (names are the caller's text).
DROPPED_NAME_MAX_CHARS = 64


@dataclass(slots=True)
class Dropped:
    """What was not forwarded: field names (``metadata.<key>`` for metadata keys)."""

    count: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.names) < MAX_DROPPED_NAMES:
            shown = "".join(ch if ch.isprintable() else "?" for ch in name[:DROPPED_NAME_MAX_CHARS])
            self.names.append(shown)


def _openai_metadata(value: Any, dropped: Dropped) -> dict[str, str] | None:
    if not isinstance(value, dict):
        dropped.add("metadata")
        return None
    kept: dict[str, str] = {}
    for key, item in value.items():
        ok = (
            _METADATA_KEY.fullmatch(key) is not None
            and _REDIRECT_LIKE.search(key) is None
            and isinstance(item, str)
            and len(item) <= METADATA_VALUE_MAX_CHARS
            and len(kept) < METADATA_MAX_KEYS
        )
        if ok:
            kept[key] = item
        else:
            dropped.add(f"metadata.{key}")
    return kept


def _anthropic_metadata(value: Any, dropped: Dropped) -> dict[str, str] | None:
    if not isinstance(value, dict):
        dropped.add("metadata")
        return None
    kept: dict[str, str] = {}
    for key, item in value.items():
        if (
            key in ANTHROPIC_METADATA_KEYS
            and isinstance(item, str)
            and len(item) <= ANTHROPIC_USER_ID_MAX_CHARS
        ):
            kept[key] = item
        else:
            dropped.add(f"metadata.{key}")
    return kept


def _extra_value(name: str, value: Any, dropped: Dropped) -> Any:
    """An admin-allowed extra field's value, without the never-forwarded names inside it: an
    upstream spreads a mapping like ``chat_template_kwargs`` into its own keyword arguments,
    where ``{"chat_template": …}`` re-templates the call (vLLM before 0.11 let it override
    the model's template)."""
    if not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for key, item in value.items():
        if key.lower() in NEVER_FORWARDED:
            dropped.add(f"{name}.{key}")
        else:
            kept[key] = item
    return kept


def forward_fields(
    kind: str, api: UpstreamApi, body: dict[str, Any], extra: frozenset[str]
) -> tuple[dict[str, Any], Dropped]:
    """The fields of ``body`` to forward for an endpoint of ``kind``, and what was dropped.
    ``extra``: the fields the model's admin allowed beyond the documented ones."""
    documented = DOCUMENTED[kind]
    dropped = Dropped()
    if "metadata" not in body and body.keys() <= documented:
        return dict(body), dropped  # the usual call: nothing to look at one by one
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name == "model":
            out[name] = value  # replaced by the upstream's model name when the body is built
        elif name == "metadata" and name in documented:
            clean = (
                _anthropic_metadata(value, dropped)
                if api is UpstreamApi.ANTHROPIC
                else _openai_metadata(value, dropped)
            )
            if clean is not None:
                out[name] = clean
        elif name in documented and name not in NEVER_FORWARDED:
            out[name] = value
        elif name in extra and name not in NEVER_FORWARDED:
            out[name] = _extra_value(name, value, dropped)
        else:
            dropped.add(name)
    return out, dropped
