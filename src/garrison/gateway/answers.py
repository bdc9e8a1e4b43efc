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
from aiohttp import web

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
# An answer is written to the client this much at a time, each write waiting for the
# transport to drain (so the transport never queues a second copy of a large answer).
WRITE_BYTES = 1024 * 1024


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


async def read_answer(resp: aiohttp.ClientResponse, limit: int, charge: Charge) -> bytearray:
    """The whole answer, charged to the budget as it arrives (a declared length at once);
    ``UpstreamFailed`` past ``limit`` bytes, ``ResponseBudgetExhausted`` over the budget.
    A declared length is read into one buffer of that size (no second copy to join)."""
    declared = resp.content_length
    if declared is not None:
        if declared > limit:
            raise UpstreamFailed("upstream answer over the size limit")
        charge.take(declared)
        buffer = bytearray(declared)
        size = 0
        async for chunk in resp.content.iter_any():
            end = size + len(chunk)
            if end > declared:
                raise UpstreamFailed("upstream answer longer than it declared")
            buffer[size:end] = chunk
            size = end
        if size != declared:
            raise UpstreamFailed("upstream answer shorter than it declared")
        return buffer
    grown = bytearray()
    async for chunk in resp.content.iter_any():
        if len(grown) + len(chunk) > limit:
            raise UpstreamFailed("upstream answer over the size limit")
        charge.take(len(chunk))
        grown += chunk
    return grown


def renamed_length(raw: bytearray, old: bytes, new: bytes) -> int:
    """The length of ``raw`` once every ``old`` is replaced by ``new``."""
    if old == new:
        return len(raw)
    return len(raw) + raw.count(old) * (len(new) - len(old))


def renamed_whole(raw: bytearray, old: bytes, new: bytes, length: int) -> bytearray | None:
    """``raw`` with every ``old`` replaced by ``new`` (``length``: ``renamed_length``'s), when
    both fit one write (most answers: sent whole with their head, one copy made in C);
    None when not: then ``write_renamed`` sends it piece by piece."""
    if len(raw) > WRITE_BYTES or length > WRITE_BYTES:
        return None
    return raw if old == new else raw.replace(old, new)


async def write_renamed(
    response: web.StreamResponse, raw: bytearray, old: bytes, new: bytes
) -> None:
    """Write ``raw`` with every ``old`` replaced by ``new`` (as ``bytes.replace`` would),
    ``WRITE_BYTES`` at a time with back-pressure: no renamed copy of the whole answer, no
    whole answer queued in the transport."""
    view = memoryview(raw)
    if old == new:
        for start in range(0, len(raw), WRITE_BYTES):
            await response.write(view[start : start + WRITE_BYTES])
        return
    out = bytearray()
    position, reach = 0, len(old) - 1
    while position < len(raw):
        window = min(position + WRITE_BYTES, len(raw))
        hit = raw.find(old, position, window + reach)
        if hit < 0:
            out += view[position:window]
            position = window
        else:
            out += view[position:hit]
            out += new
            position = hit + len(old)
        if len(out) >= WRITE_BYTES:
            await response.write(bytes(out))
            out.clear()
    if out:
        await response.write(bytes(out))


def answer_usage(api: UpstreamApi, raw: bytearray) -> Usage:
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
    "renamed_length",
    "renamed_whole",
    "write_renamed",
]
