"""OpenTelemetry traces of model calls: optional, off by default, free when off.

    [tracing]
    otlp_endpoint = "http://127.0.0.1:4318/v1/traces"   # OTLP over HTTP; unset: off

Off, this module imports nothing of OpenTelemetry and the gateway's model handler pays one
module-attribute test (``span_for is None``). On (the ``otel`` extra installed), each model
call is one server span, its parent taken from the caller's W3C ``traceparent``. The span's
attributes are an allow-list: the request id, the endpoint, the HTTP status and the outcome,
and the model's name only when an admin opted in to per-model metric labels
(``[metrics] model_labels``: model names of restricted models are themselves sensitive) and
the caller was allowed to use it. Never a key, a principal, an address, a prompt or an
answer; exceptions are not recorded (their text is not ours to export).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from garrison.errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from garrison.gateway.call import Call
    from garrison.gateway.state import GatewayState

Traced = Callable[
    ["Awaitable[web.StreamResponse]", "web.Request", "Call", "GatewayState"],
    "Awaitable[web.StreamResponse]",
]

SPAN_NAME = "garrison.call"
TRACER_NAME = "garrison"
# Spans waiting for export: a dead collector costs at most this many in memory (the SDK's
# batch processor drops beyond it and counts).
EXPORT_QUEUE_MAX = 2048

# What the model handler awaits its work through when tracing is on; None: off.
span_for: Traced | None = None
_provider: Any = None


def configure(otlp_endpoint: str | None) -> None:
    """From the settings: export to ``otlp_endpoint`` (OTLP/HTTP), or off when None."""
    if not otlp_endpoint:
        disable()
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "[tracing] otlp_endpoint is set but OpenTelemetry is not installed: "
            "pip install 'garrison[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": "garrison"}))
    exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=EXPORT_QUEUE_MAX))
    enable(provider)


def enable(provider: Any) -> None:
    """Trace model calls with ``provider`` (an SDK ``TracerProvider``; tests pass one with an
    in-memory exporter)."""
    global span_for, _provider
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tracer = provider.get_tracer(TRACER_NAME)
    propagator = TraceContextTextMapPropagator()

    async def traced(
        work: Awaitable[web.StreamResponse],
        request: web.Request,
        call: Call,
        state: GatewayState,
    ) -> web.StreamResponse:
        parent = propagator.extract(request.headers)
        with tracer.start_as_current_span(
            SPAN_NAME,
            context=parent,
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            response: web.StreamResponse | None = None
            try:
                response = await work
                return response
            finally:
                attributes = span_attributes(call, response, state)
                span.set_attributes(attributes)
                if attributes["garrison.outcome"] == "error":
                    span.set_status(Status(StatusCode.ERROR))

    _provider = provider
    span_for = traced


def disable() -> None:
    """Tracing off; spans still queued are exported first."""
    global span_for, _provider
    provider, _provider, span_for = _provider, None, None
    if provider is not None:
        provider.shutdown()


def span_attributes(
    call: Call, response: web.StreamResponse | None, state: GatewayState
) -> dict[str, str | int]:
    """The allow-list of what a span says about a call."""
    status = response.status if response is not None else 0
    if call.cut is not None:
        outcome = "cut"
    elif response is None or status >= 500:
        outcome = "error"
    elif not call.allowed:
        outcome = "refused"
    else:
        outcome = "ok" if status < 400 else "upstream_refused"
    out: dict[str, str | int] = {
        "garrison.request_id": call.request_id,
        "garrison.endpoint": call.endpoint,
        "garrison.outcome": outcome,
        "http.response.status_code": status,
    }
    # A model the caller could use, and only when an admin opted in to model labels (an
    # unknown name asked for is the caller's text, never exported).
    if state.model_outcomes is not None and call.model_id is not None and call.model:
        out["garrison.model"] = call.model
    return out
