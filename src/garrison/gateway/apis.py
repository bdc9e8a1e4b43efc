"""The two wire APIs the gateway speaks: endpoints, request checks and error shapes.

Errors always go out in the shape of the API the client called, so the official SDKs raise
their usual exception types (``openai.AuthenticationError``, ``anthropic.NotFoundError`` …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from garrison.domain import UpstreamApi
from garrison.errors import (
    BadRequest,
    GarrisonError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
)
from garrison.gateway.json_depth import MAX_JSON_DEPTH, within_depth

# Fields a client could use to redirect or re-key the call through a permissive upstream
# (LiteLLM-style proxies honour some of them). The registry alone picks the upstream, so
# they are removed from what is forwarded.
REDIRECT_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "extra_headers",
        "headers",
        "extra_body",
        "extra_query",
        "custom_llm_provider",
        "deployment_id",
        "engine",
    }
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    upstream_suffix: str
    api: UpstreamApi
    kind: str
    streamable: bool
    # (field, accepted types, human description) that must be present.
    required: tuple[tuple[str, tuple[type, ...], str], ...]


CHAT = Endpoint(
    "/v1/chat/completions",
    "/chat/completions",
    UpstreamApi.OPENAI,
    "chat",
    True,
    (("messages", (list,), "a list of messages"),),
)
COMPLETIONS = Endpoint(
    "/v1/completions",
    "/completions",
    UpstreamApi.OPENAI,
    "completions",
    True,
    (("prompt", (str, list), "a string or a list"),),
)
EMBEDDINGS = Endpoint(
    "/v1/embeddings",
    "/embeddings",
    UpstreamApi.OPENAI,
    "embeddings",
    False,
    (("input", (str, list), "a string or a list"),),
)
MESSAGES = Endpoint(
    "/v1/messages",
    "/messages",
    UpstreamApi.ANTHROPIC,
    "messages",
    True,
    (("messages", (list,), "a list of messages"), ("max_tokens", (int,), "an integer")),
)
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES)


def parse_body(endpoint: Endpoint, raw: bytes) -> dict[str, Any]:
    """Parse and check a request body; ``BadRequest`` says exactly what is wrong."""
    if not raw:
        raise BadRequest("empty body", public_message="Request body is empty; expected JSON.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc}", public_message=f"Request body is not valid JSON: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("body not an object", public_message="Request body must be a JSON object.")
    if not within_depth(body):
        raise BadRequest(
            "body nested too deep",
            public_message=f"Request body nests deeper than {MAX_JSON_DEPTH} levels.",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("missing model", public_message="Field 'model' is required (a string).")
    for name, types, description in endpoint.required:
        value = body.get(name)
        if value is None or not isinstance(value, types) or isinstance(value, bool):
            raise BadRequest(
                f"missing {name}", public_message=f"Field '{name}' is required ({description})."
            )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("bad stream", public_message="Field 'stream' must be a boolean.")
    if stream and not endpoint.streamable:
        raise BadRequest("stream unsupported", public_message="This endpoint does not stream.")
    return body


# ── error shapes ───────────────────────────────────────────────────────────────────────────
_OPENAI_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def _anthropic_type(exc: GarrisonError) -> str:
    if isinstance(exc, Overloaded):
        return "overloaded_error"
    return _ANTHROPIC_TYPES.get(exc.status, "api_error")


def error_payload(api: UpstreamApi, exc: GarrisonError) -> dict[str, Any]:
    if api is UpstreamApi.ANTHROPIC:
        return {
            "type": "error",
            "error": {"type": _anthropic_type(exc), "message": exc.public_message},
        }
    return {
        "error": {
            "message": exc.public_message,
            "type": _OPENAI_TYPES.get(exc.status, "server_error"),
            "param": None,
            "code": exc.code,
        }
    }


def error_body(api: UpstreamApi, exc: GarrisonError) -> bytes:
    return orjson.dumps(error_payload(api, exc))


def stream_error_event(api: UpstreamApi, exc: GarrisonError) -> bytes:
    """The final event of a stream that is cut: each SDK raises it as an API error."""
    payload = orjson.dumps(error_payload(api, exc))
    if api is UpstreamApi.ANTHROPIC:
        return b"event: error\ndata: " + payload + b"\n\n"
    return b"data: " + payload + b"\n\n"


def error_for_upstream_status(status: int, message: str) -> GarrisonError:
    """Map an upstream 4xx to the error the client sees (message already scrubbed)."""
    if status == 404:
        return NotFound("upstream 404", public_message=message or NotFound.default_message)
    if status == 413:
        return PayloadTooLarge(
            "upstream 413", public_message=message or PayloadTooLarge.default_message
        )
    if status == 429:
        return RateLimited("upstream 429", public_message=message or RateLimited.default_message)
    if status in (400, 422):
        return BadRequest(
            f"upstream {status}", public_message=message or BadRequest.default_message
        )
    # 401/403 and anything odd: our credential or config is wrong — not the caller's business.
    return UpstreamError(f"upstream answered {status}")
