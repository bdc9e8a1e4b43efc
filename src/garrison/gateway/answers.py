"""Non-streamed upstream answers: bounded memory and time per call.

A non-streamed answer is read whole (its usage is counted and its model name rewritten
before it is passed on), so it costs memory for as long as the call lasts. Three bounds:

* every answer's bytes are charged to a process-wide budget (``max_buffered_response_bytes``)
  as they arrive, and given back once the answer is written to the client; an answer that
  would go over is dropped and the caller gets 503 in the API's shape (outcome
  ``response_budget`` in the audit record);
* the whole call, connect to last byte, has a deadline (``nonstream_max_seconds``) that a
  slow-dripping upstream cannot stretch chunk by chunk: 504, outcome ``call_deadline``;
* a large answer is not parsed whole just to read its usage: only the ``usage`` object near
  its end is (a 50 MiB embeddings answer parsed whole costs ~4x its size and blocks the
  event loop for a long moment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import orjson

from garrison.domain import UpstreamApi
from garrison.errors import Overloaded, UpstreamFailed, UpstreamTimeout
from garrison.gateway.metering import Usage, usage_from_body

if TYPE_CHECKING:
    from garrison.gateway.limits import GatewayLimits

# Bytes of non-streamed answers held in the process at once: four answers at the 64 MiB
# size limit, or 160 ordinary 1.6 MiB ones; the parse and the renamed copy cost up to ~2x
# this at peak (20 concurrent 50 MiB answers reached 1.38 GB unbounded).
MAX_BUFFERED_RESPONSE_BYTES = 256 * 1024 * 1024
# Longest non-streamed call, connect to last byte: twice the longest wait for a first byte
# (a long prefill); an upstream dripping a byte at a time cannot hold a call past it.
NONSTREAM_MAX_SECONDS = 600.0
# Answers up to this size are parsed whole (checked as JSON, usage read); larger ones have
# only their usage object parsed: a 1 MiB parse takes the event loop ~2 ms.
FULL_PARSE_MAX_BYTES = 1024 * 1024
# Where a large answer's usage object is looked for: its last 64 KiB (OpenAI and Anthropic
# put usage last; a usage object is a few hundred bytes).
USAGE_TAIL_BYTES = 64 * 1024


class ResponseBudgetExhausted(Overloaded):
    default_message = "The gateway is holding too many large answers; retry later."


class CallDeadline(UpstreamTimeout):
    default_message = "The model server did not finish its answer in time."


@dataclass(slots=True)
class ResponseBudget:
    """Bytes of non-streamed answers held now (event loop only)."""

    held: int = 0
    # The most ever held at once (for tests and /metrics).
    peak: int = 0


class Charge:
    """What one call holds of the budget; ``release`` gives it back (once)."""

    __slots__ = ("_budget", "_limit", "amount")

    def __init__(self, budget: ResponseBudget, limits: GatewayLimits) -> None:
        self._budget = budget
        self._limit = limits.max_buffered_response_bytes
        self.amount = 0

    def take(self, amount: int) -> None:
        budget = self._budget
        if budget.held + amount > self._limit:
            raise ResponseBudgetExhausted(f"{budget.held} + {amount} bytes over the budget")
        budget.held += amount
        budget.peak = max(budget.peak, budget.held)
        self.amount += amount

    def release(self) -> None:
        self._budget.held -= self.amount
        self.amount = 0


async def read_answer(resp: aiohttp.ClientResponse, limit: int, charge: Charge) -> bytes:
    """The whole answer, charged to the budget as it arrives (a declared length at once);
    ``UpstreamFailed`` past ``limit`` bytes, ``ResponseBudgetExhausted`` over the budget."""
    declared = resp.content_length
    if declared is not None:
        if declared > limit:
            raise UpstreamFailed("upstream answer over the size limit")
        charge.take(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamFailed("upstream answer over the size limit")
        if declared is None or size > declared:
            charge.take(len(chunk))
        chunks.append(chunk)
    raw = b"".join(chunks)
    del chunks
    return raw


def answer_usage(api: UpstreamApi, raw: bytes) -> Usage:
    """The usage an answer reports; ``orjson.JSONDecodeError`` if a small answer is not
    JSON. A large answer's usage is read from its tail only (unknown if not found there)."""
    if len(raw) <= FULL_PARSE_MAX_BYTES:
        return usage_from_body(api, orjson.loads(raw))
    tail = raw[-USAGE_TAIL_BYTES:]
    at = tail.rfind(b'"usage"')
    if at < 0:
        return Usage()
    colon = tail.find(b":", at + 7)
    if colon < 0:
        return Usage()
    text = tail[colon + 1 :].decode("utf-8", "replace").lstrip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return Usage()
    return usage_from_body(api, {"usage": value})


__all__ = [
    "MAX_BUFFERED_RESPONSE_BYTES",
    "NONSTREAM_MAX_SECONDS",
    "CallDeadline",
    "Charge",
    "ResponseBudget",
    "ResponseBudgetExhausted",
    "answer_usage",
    "read_answer",
]
