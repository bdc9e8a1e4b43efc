"""The gateway's per-SSE-event CPU on the streaming path: meter, rename, scrub, error rewrite.

    PYTHONPATH=<tree>/src:<tree> python bench/sse_meter_bench.py [--streams 2000] [--repeats 15]

Feeds whole streams, one event per chunk (as the mock upstream writes them, a pause between
events, so each TCP read holds one event), through what ``forward_stream`` does to each chunk
it reads from the upstream, and prints the CPU time (``time.process_time``) per event: min and
median over the repeats. Per-stream set-up (the meter, the model's names and credential forms)
is inside the timing, divided over the stream's events.

Streams (20 events each, the shapes of ``garrison.mock.responses``, the bench's names and key):

* openai_asked: the client asked for usage (what ``bench/stacks.py`` sends): every chunk has
  ``"usage":null``, the usage chunk is passed on;
* openai_injected: the gateway asked for usage on the client's behalf: the ``"usage":null``
  fields and the usage chunk are removed;
* openai_split: openai_injected with every event cut in two reads (the fallback path);
* anthropic: message_start, content_block_start, 15 deltas, content_block_stop,
  message_delta, message_stop.

Runs against whichever source tree is on PYTHONPATH: with ``garrison.gateway.sse_relay``
(this branch) it drives ``StreamRelay``; without it, the loop body of ``forward_stream`` as it
was on main. Each scenario's output and usage are printed as a digest, so that two trees can be
checked to pass the same bytes and count the same tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from garrison.domain import AuthStyle, Level, Model, Secret, UpstreamApi
from garrison.mock import responses as r

# The names and key of bench/gateway_bench.py.
UPSTREAM_MODEL = "mock-small"
CLIENT_MODEL = "bench-model"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
EVENTS = 20

Feed = Callable[[bytes], bytes]

try:
    from garrison.gateway.sse_relay import StreamRelay
except ImportError:  # a tree from before StreamRelay
    StreamRelay = None


def model_for(api: UpstreamApi) -> Model:
    return Model(
        id="m1",
        name=CLIENT_MODEL,
        upstream_url="http://127.0.0.1:1/v1",
        upstream_model=UPSTREAM_MODEL,
        api=api,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=frozenset(),
        upstream_key=Secret(UPSTREAM_KEY),
    )


def _fixed_ids() -> None:
    """The mock's random ids and clock fixed, so two trees' outputs can be compared."""
    r._new_id = lambda prefix: prefix + "0123456789abcdef01234567"  # type: ignore[attr-defined,unused-ignore]
    r._now = lambda: 1_760_000_000  # type: ignore[attr-defined,unused-ignore]


MODELS = {api: model_for(api) for api in UpstreamApi}


def openai_events() -> list[bytes]:
    pieces = r.generate_pieces("benchmark prompt", EVENTS - 3)  # + stop, usage, [DONE]
    return list(r.chat_stream(UPSTREAM_MODEL, pieces, 12, include_usage=True))


def anthropic_events() -> list[bytes]:
    pieces = r.generate_pieces("benchmark prompt", EVENTS - 5)
    return list(r.anthropic_stream(UPSTREAM_MODEL, pieces, 12))


def halves(events: list[bytes]) -> list[bytes]:
    return [part for e in events for part in (e[: len(e) // 2], e[len(e) // 2 :])]


def stream_path(api: UpstreamApi, drop: bool) -> tuple[Feed, Callable[[], Any]]:
    """A per-chunk function doing what forward_stream does, and the stream's usage."""
    model = MODELS[api]
    if StreamRelay is None:
        return _main_path(api, model, drop)
    relay = StreamRelay(api, model, drop_usage_chunk=drop)

    def feed(data: bytes) -> bytes:
        out: bytes = relay.feed(data)
        if relay.overflow:
            raise RuntimeError("overflow")
        return out

    return feed, lambda: relay.usage


def _main_path(api: UpstreamApi, model: Model, drop: bool) -> tuple[Feed, Callable[[], Any]]:
    """The loop body of forward_stream before StreamRelay (main at 23a715a)."""
    from garrison.gateway.credential_echo import model_answer_forms, model_key, scrub_bytes
    from garrison.gateway.metering import SseMeter
    from garrison.gateway.upstream_call import client_model_bytes
    from garrison.gateway.upstream_errors import rewrite_stream_errors

    meter = SseMeter(api, drop_usage_chunk=drop)
    old, new = client_model_bytes(model)
    rename = old != new
    echo_forms = model_answer_forms(model)

    def feed(data: bytes) -> bytes:
        out = meter.feed(data)
        if meter.overflow:
            raise RuntimeError("overflow")
        if not out:
            return out
        if rename:
            out = out.replace(old, new)
        if echo_forms:
            out = scrub_bytes(out, echo_forms)
        return rewrite_stream_errors(
            out,
            api,
            upstream_model=model.upstream_model,
            model_name=model.name,
            key=model_key(model),
        )

    return feed, lambda: meter.usage


def one_stream(api: UpstreamApi, drop: bool, chunks: list[bytes]) -> tuple[bytes, Any]:
    feed, usage = stream_path(api, drop)
    return b"".join([feed(chunk) for chunk in chunks]), usage()


def timed(api: UpstreamApi, drop: bool, chunks: list[bytes], streams: int) -> float:
    """CPU µs per event over ``streams`` streams."""
    start = time.process_time()
    for _ in range(streams):
        feed, _usage = stream_path(api, drop)
        for chunk in chunks:
            feed(chunk)
    return (time.process_time() - start) / (streams * EVENTS) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=2000, help="streams per repeat")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    _fixed_ids()
    openai, anthropic = openai_events(), anthropic_events()
    assert len(openai) == EVENTS and len(anthropic) == EVENTS
    scenarios = {
        "openai_asked": (UpstreamApi.OPENAI, False, openai),
        "openai_injected": (UpstreamApi.OPENAI, True, openai),
        "openai_split": (UpstreamApi.OPENAI, True, halves(openai)),
        "anthropic": (UpstreamApi.ANTHROPIC, False, anthropic),
    }
    for name, (api, drop, chunks) in scenarios.items():
        out, usage = one_stream(api, drop, chunks)
        seen = (usage.tokens_in, usage.tokens_out, usage.counted_chunks, sorted(usage.flags))
        digest = hashlib.sha256(out).hexdigest()[:12]
        timed(api, drop, chunks, args.streams // 4)  # warm-up
        runs = [timed(api, drop, chunks, args.streams) for _ in range(args.repeats)]
        print(
            f"{name:16s} µs/event min {min(runs):6.3f}  median {statistics.median(runs):6.3f}"
            f"   out {digest} ({len(out)} B)  usage {seen}"
        )


if __name__ == "__main__":
    main()
