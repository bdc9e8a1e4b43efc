"""OpenTelemetry traces (``[tracing]``): off by default and then never imported; on, one
server span per model call, child of the caller's ``traceparent``, with an allow-list of
attributes (no key, no prompt, the model only when model labels are opted in)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.gateway import tracing
from tests.support.world import World

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
PROMPT = "the launch codes are 0000 PROMPT-TEXT"
ALLOWED_ATTRIBUTES = {
    "garrison.request_id",
    "garrison.endpoint",
    "garrison.outcome",
    "garrison.model",
    "http.response.status_code",
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


async def chat(world: World, model: str, **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": PROMPT}]},
            headers={"authorization": f"Bearer {world.keys['alice']}", **headers},
        ) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers["x-request-id"]


def only_span(exporter: InMemorySpanExporter, request_id: str) -> ReadableSpan:
    found = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("garrison.request_id") == request_id
    ]
    assert len(found) == 1, exporter.get_finished_spans()
    return found[0]


def assert_clean(span: ReadableSpan, world: World, *absent: str) -> None:
    assert set(span.attributes or {}) <= ALLOWED_ATTRIBUTES
    text = span.to_json()
    for secret in (world.keys["alice"], PROMPT, "PROMPT-TEXT", *absent):
        assert secret not in text


async def test_one_span_per_call_parented_by_the_callers_traceparent(
    world: World, spans: InMemorySpanExporter
) -> None:
    status, request_id = await chat(world, "assistant", traceparent=TRACEPARENT)
    assert status == 200
    span = only_span(spans, request_id)
    assert span.name == tracing.SPAN_NAME and span.kind is SpanKind.SERVER
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent.span_id == int(PARENT_ID, 16) and span.parent.is_remote
    attributes = dict(span.attributes or {})
    assert attributes["garrison.outcome"] == "ok"
    assert attributes["http.response.status_code"] == 200
    assert attributes["garrison.endpoint"] == "chat"
    assert "garrison.model" not in attributes  # model labels are not opted in
    assert_clean(span, world, "assistant")


async def test_without_a_traceparent_the_span_starts_a_trace(
    world: World, spans: InMemorySpanExporter
) -> None:
    status, request_id = await chat(world, "assistant")
    assert status == 200
    span = only_span(spans, request_id)
    assert span.parent is None


async def test_the_model_is_named_only_when_model_labels_are_opted_in(
    world: World, spans: InMemorySpanExporter
) -> None:
    world.gateway.state.model_outcomes = Counter()  # what [metrics] model_labels = true does
    _, request_id = await chat(world, "assistant")
    assert (only_span(spans, request_id).attributes or {})["garrison.model"] == "assistant"
    # A name the caller typed that is no model of theirs is never exported.
    status, refused_id = await chat(world, "secret-project-x")
    assert status == 404
    refused = only_span(spans, refused_id)
    assert (refused.attributes or {})["garrison.outcome"] == "refused"
    assert "garrison.model" not in (refused.attributes or {})
    assert_clean(refused, world, "secret-project-x")


async def test_a_refused_key_is_a_refused_span_without_the_key(
    world: World, spans: InMemorySpanExporter
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": PROMPT}]},
            headers={"authorization": "Bearer gar_wrong_0123456789abcdef"},
        ) as resp,
    ):
        await resp.read()
        request_id = resp.headers["x-request-id"]
    span = only_span(spans, request_id)
    assert (span.attributes or {})["garrison.outcome"] == "refused"
    assert_clean(span, world, "gar_wrong_0123456789abcdef")


def test_with_tracing_off_opentelemetry_is_not_imported(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from garrison.bootstrap import init
        from garrison.config import load_settings
        from garrison.server import Gateway

        done = init(Path({str(tmp_path / "data")!r}))
        settings = load_settings(done.config_path, env={{}})
        assert settings.tracing_otlp_endpoint is None
        gateway = Gateway(settings)  # builds the app
        from garrison.gateway import tracing
        assert tracing.span_for is None
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(",".join(loaded) or "none")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


def test_tracing_on_loads_the_exporter_and_off_unloads_it() -> None:
    tracing.configure("http://127.0.0.1:9/v1/traces")
    try:
        assert tracing.span_for is not None
    finally:
        tracing.disable()
    assert tracing.span_for is None


def write_config(tmp_path: Path, tracing_table: str) -> Path:
    path = tmp_path / "garrison.toml"
    path.write_text(
        '[storage]\ndatabase_url = "sqlite:///x.db"\nkey_dir = "keys"\n' + tracing_table
    )
    return path


def test_the_tracing_section_is_read_and_checked(tmp_path: Path) -> None:
    endpoint = "http://127.0.0.1:4318/v1/traces"
    path = write_config(tmp_path, f'[tracing]\notlp_endpoint = "{endpoint}"\n')
    assert load_settings(path, env={}).tracing_otlp_endpoint == endpoint
    assert load_settings(write_config(tmp_path, ""), env={}).tracing_otlp_endpoint is None
    with pytest.raises(ConfigError, match="otlp_endpoint must be an http"):
        load_settings(write_config(tmp_path, '[tracing]\notlp_endpoint = "udp://x"\n'), env={})
    with pytest.raises(ConfigError, match="unknown key 'endpoint'"):
        load_settings(write_config(tmp_path, '[tracing]\nendpoint = "http://x"\n'), env={})
