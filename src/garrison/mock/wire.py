"""HTTP plumbing of the mock upstream: body parsing, API-shaped errors, leaky headers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from . import responses as r

# Path answered in Anthropic shapes; every other path speaks OpenAI.
ANTHROPIC_PATH = "/v1/messages"


class Reject(Exception):
    """Raised by handlers to answer early with a prepared error response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_response(
    payload: r.JsonObject, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Serialise ``payload`` with orjson as an ``application/json`` response."""
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def is_anthropic(request: web.Request) -> bool:
    """Whether the request addressed the Anthropic Messages API."""
    return request.path == ANTHROPIC_PATH


def api_error(
    request: web.Request,
    status: int,
    message: str,
    *,
    openai_type: str,
    anthropic_type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in the shape of the API the request addressed."""
    if is_anthropic(request):
        return json_response(r.anthropic_error(anthropic_type, message), status, headers)
    return json_response(r.openai_error(message, openai_type, param, code), status, headers)


def bad_request(request: web.Request, message: str, param: str | None = None) -> Reject:
    """A 400 ``invalid_request_error`` in the request's API shape, ready to raise."""
    return Reject(
        api_error(
            request,
            400,
            message,
            openai_type="invalid_request_error",
            anthropic_type="invalid_request_error",
            param=param,
        )
    )


def lower_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Headers with lower-case names; repeated headers are joined with ``", "``."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


async def read_json(request: web.Request) -> r.JsonObject:
    """The body as a JSON object with a non-empty string ``model``, else :class:`Reject`."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise bad_request(request, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request(request, "Request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(request, "you must provide a model parameter", "model")
    return data


def require_messages(request: web.Request, body: r.JsonObject) -> list[Any]:
    """The non-empty ``messages`` array, else :class:`Reject`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(request, "messages: must be a non-empty array", "messages")
    return messages


def include_usage(body: r.JsonObject) -> bool:
    """Whether ``stream_options.include_usage`` is true."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def add_leaky_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook adding the headers a real upstream would leak."""
    for name, value in r.LEAKY_HEADERS:
        response.headers[name] = value
