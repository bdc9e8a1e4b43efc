"""Payload builders for the mock upstream: deterministic text, token counts, and the
OpenAI / Anthropic JSON and server-sent-event shapes.

Everything here is pure (no I/O), so the HTTP layer in :mod:`garrison.mock.server` only
decides *what* to send and *when*.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

JsonObject = dict[str, Any]

# Model ids listed by GET /v1/models: fixed so tests can assert on them.
MODEL_IDS: tuple[str, ...] = ("mock-small", "mock-large")

# Vocabulary of generated answers; 31 words (a prime) so every stride visits every word.
WORDS: tuple[str, ...] = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "amber", "basalt", "cobalt", "dune", "ember",
)  # fmt: skip

# Embedding vector length: small enough to eyeball, large enough to be distinct.
EMBEDDING_DIM = 8

# Upstream details the fail-* modes leak on purpose; the gateway must scrub them.
LEAK_HOST = "mock-internal-7.corp"
# Organisation id leaked in error bodies and the openai-organization header.
LEAK_ORG = "org-SECRET123"
# Header the fail-400 mode adds to prove the gateway drops unknown upstream headers.
LEAK_HEADER = "x-upstream-secret-header"
# Stack trace the fail-500 mode embeds in its body.
LEAK_TRACE = (
    "Traceback (most recent call last): "
    f'File "/srv/{LEAK_HOST}/engine/worker.py", line 1337, in generate: '
    "RuntimeError: CUDA error: out of memory on gpu-node-3"
)
# Context length quoted by the fail-400 mode.
CONTEXT_LIMIT = 4096

# Headers on every response that a real upstream would leak and the gateway must filter.
LEAKY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Server", "mock-upstream/1.0"),
    ("Set-Cookie", "upstream_session=abc"),
    ("x-upstream-internal", "1"),
    ("openai-organization", LEAK_ORG),
)


# --- text and token accounting ---------------------------------------------------------


def count_words(text: str) -> int:
    """Whitespace-separated words in ``text`` (the mock's notion of a token)."""
    return len(text.split())


def content_text(content: object) -> str:
    """Text of a message ``content``: a string, or a list of parts/blocks with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def messages_text(messages: Sequence[object]) -> tuple[int, str]:
    """Word count over all messages' content, and the text of the last user message."""
    words = 0
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))
        words += count_words(text)
        if message.get("role") == "user":
            last_user = text
    return words, last_user


def generate_pieces(prompt: str, tokens: int) -> list[str]:
    """``tokens`` deterministic stream pieces for ``prompt``; ``"".join`` gives the text.

    The prompt's hash picks a start word and a stride through :data:`WORDS`, so equal
    prompts always produce equal answers and different prompts usually differ.
    """
    seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
    size = len(WORDS)
    start = seed % size
    stride = 1 + (seed // size) % (size - 1)
    return [
        (WORDS[(start + i * stride) % size] if i == 0 else " " + WORDS[(start + i * stride) % size])
        for i in range(tokens)
    ]


def embedding_vector(text: str) -> list[float]:
    """Deterministic unit-length vector of :data:`EMBEDDING_DIM` floats for ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [
        int.from_bytes(digest[i * 4 : i * 4 + 4], "big") / 2**31 - 1.0 for i in range(EMBEDDING_DIM)
    ]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _now() -> int:
    return int(time.time())


def sse_data(payload: JsonObject | str) -> bytes:
    """One OpenAI-style event: ``data: <json>\\n\\n`` (or a literal such as ``[DONE]``)."""
    body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + body + b"\n\n"


def sse_event(name: str, payload: JsonObject) -> bytes:
    """One Anthropic-style event with an ``event:`` line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> JsonObject:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --- OpenAI ----------------------------------------------------------------------------


def models_list() -> JsonObject:
    """Body of ``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "mock"}
            for model_id in MODEL_IDS
        ],
    }


def chat_completion(model: str, pieces: list[str], prompt_tokens: int) -> JsonObject:
    """Non-streaming ``chat.completion`` object."""
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": _now(),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(prompt_tokens, len(pieces)),
    }


def chat_stream(
    model: str, pieces: list[str], prompt_tokens: int, include_usage: bool
) -> Iterator[bytes]:
    """``chat.completion.chunk`` events: one per piece, a stop chunk, usage?, ``[DONE]``."""
    base: JsonObject = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": _now(),
        "model": model,
    }
    if include_usage:
        base["usage"] = None
    for i, piece in enumerate(pieces):
        delta: JsonObject = (
            {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        )
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        yield sse_data({**base, "choices": [choice]})
    stop = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    yield sse_data({**base, "choices": [stop]})
    if include_usage:
        yield sse_data({**base, "choices": [], "usage": _usage(prompt_tokens, len(pieces))})
    yield sse_data("[DONE]")


def prompt_list(prompt: object) -> list[str]:
    """Normalise a legacy ``prompt`` (str, list of str, token list(s)) to prompt strings."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [" ".join(str(p) for p in prompt)]
        return [
            p if isinstance(p, str) else " ".join(str(t) for t in p)
            for p in prompt
            if isinstance(p, str | list)
        ]
    return [""]


def text_completion(model: str, choices: list[list[str]], prompt_tokens: int) -> JsonObject:
    """Non-streaming ``text_completion`` object, one choice per prompt."""
    return {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": _now(),
        "model": model,
        "choices": [
            {"text": "".join(pieces), "index": i, "logprobs": None, "finish_reason": "stop"}
            for i, pieces in enumerate(choices)
        ],
        "usage": _usage(prompt_tokens, sum(len(p) for p in choices)),
    }


def text_completion_stream(
    model: str, choices: list[list[str]], prompt_tokens: int, include_usage: bool
) -> Iterator[bytes]:
    """Streaming ``text_completion`` events, interleaving choices token by token."""
    base: JsonObject = {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": _now(),
        "model": model,
    }
    if include_usage:
        base["usage"] = None
    longest = max((len(p) for p in choices), default=0)
    for t in range(longest):
        for i, pieces in enumerate(choices):
            if t < len(pieces):
                choice = {"text": pieces[t], "index": i, "logprobs": None, "finish_reason": None}
                yield sse_data({**base, "choices": [choice]})
    for i in range(len(choices)):
        stop = {"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}
        yield sse_data({**base, "choices": [stop]})
    if include_usage:
        usage = _usage(prompt_tokens, sum(len(p) for p in choices))
        yield sse_data({**base, "choices": [], "usage": usage})
    yield sse_data("[DONE]")


def embeddings_input(value: object) -> list[tuple[str, int]]:
    """Normalise an embeddings ``input`` to (text, token count) pairs."""
    if isinstance(value, str):
        return [(value, count_words(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [(" ".join(str(v) for v in value), len(value))]
        out: list[tuple[str, int]] = []
        for item in value:
            if isinstance(item, str):
                out.append((item, count_words(item)))
            elif isinstance(item, list):
                out.append((" ".join(str(v) for v in item), len(item)))
        return out
    return []


def embeddings(model: str, inputs: list[tuple[str, int]], encoding_format: str) -> JsonObject:
    """``/v1/embeddings`` list; ``base64`` packs little-endian float32 like the real API."""
    data: list[JsonObject] = []
    for i, (text, _) in enumerate(inputs):
        vector = embedding_vector(text)
        encoded: list[float] | str = vector
        if encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = max(1, sum(n for _, n in inputs))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def openai_error(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> JsonObject:
    """OpenAI error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# --- Anthropic -------------------------------------------------------------------------


def anthropic_message(model: str, pieces: list[str], input_tokens: int) -> JsonObject:
    """Non-streaming Messages API response."""
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(pieces)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": len(pieces)},
    }


def anthropic_stream(model: str, pieces: list[str], input_tokens: int) -> Iterator[bytes]:
    """The Messages API event sequence for a single text block."""
    message: JsonObject = {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    yield sse_event("message_start", {"type": "message_start", "message": message})
    block_start = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield sse_event("content_block_start", block_start)
    for piece in pieces:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        yield sse_event("content_block_delta", delta)
    yield sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": len(pieces)},
    }
    yield sse_event("message_delta", message_delta)
    yield sse_event("message_stop", {"type": "message_stop"})


def anthropic_input_tokens(body: JsonObject) -> tuple[int, str]:
    """Input word count (system prompt plus all messages) and the last user message."""
    messages = body.get("messages")
    words, last_user = messages_text(messages if isinstance(messages, list) else [])
    words += count_words(content_text(body.get("system")))
    return max(1, words), last_user


def anthropic_error(error_type: str, message: str) -> JsonObject:
    """Anthropic error envelope."""
    return {"type": "error", "error": {"type": error_type, "message": message}}
