"""Building the upstream call: URL, headers and body come from the registry and the parse.

Nothing the client sent reaches the upstream except the documented (or admin-allowed) fields
of the parsed body and two validated Anthropic headers. The upstream credential is injected
here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDict

from garrison import __version__
from garrison.domain import AuthStyle, Model
from garrison.gateway.apis import Endpoint
from garrison.gateway.fields import Dropped, forward_fields

ANTHROPIC_DEFAULT_VERSION = "2023-06-01"
REQUEST_ID_HEADER = "x-request-id"
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BETA_RE = re.compile(r"^[a-z0-9][a-z0-9.,_-]{0,199}$")
_USER_AGENT = f"garrison/{__version__}"

# Response headers passed from the upstream to the client. Everything else (cookies, server
# identity, rate-limit headers naming the upstream account, request ids of the upstream) is
# dropped: the client talks to Garrison, not to the model server.
RESPONSE_HEADER_ALLOWLIST = frozenset({"content-type"})


@dataclass(frozen=True, slots=True)
class UpstreamBody:
    payload: bytes
    # A usage chunk was requested on the client's behalf (removed from what it receives).
    injected_usage: bool
    # The fields not forwarded (not documented for the API nor allowed for the model).
    dropped: Dropped


def build_upstream_body(endpoint: Endpoint, body: dict[str, Any], model: Model) -> UpstreamBody:
    """The body to forward: documented and allowed fields only (see ``gateway.fields``)."""
    # (REDIRECT_FIELDS are in NEVER_FORWARDED and in no documented list: a test holds it.)
    out, dropped = forward_fields(endpoint.kind, endpoint.api, body, model.extra_fields)
    out["model"] = model.upstream_model
    injected_usage = False
    if endpoint.api.value == "openai" and out.get("stream") is True:
        options = out.get("stream_options")
        if not isinstance(options, dict):
            options = {}
        if options.get("include_usage") is not True:
            out["stream_options"] = {**options, "include_usage": True}
            injected_usage = True
    return UpstreamBody(orjson.dumps(out), injected_usage, dropped)


def upstream_headers(
    endpoint: Endpoint, model: Model, request_id: str, client_headers: Any
) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["content-type"] = "application/json"
    headers["accept-encoding"] = "identity"
    headers["user-agent"] = _USER_AGENT
    headers[REQUEST_ID_HEADER] = request_id
    key = model.upstream_key.reveal() if model.upstream_key is not None else None
    if key and model.auth_style is AuthStyle.BEARER:
        headers["authorization"] = f"Bearer {key}"
    elif key and model.auth_style is AuthStyle.X_API_KEY:
        headers["x-api-key"] = key
    if endpoint.api.value == "anthropic":
        version = client_headers.get("anthropic-version", "")
        headers["anthropic-version"] = (
            version if _VERSION_RE.fullmatch(version) else ANTHROPIC_DEFAULT_VERSION
        )
        beta = client_headers.get("anthropic-beta", "")
        if beta and _BETA_RE.fullmatch(beta):
            headers["anthropic-beta"] = beta
    trace = traceparent(client_headers)
    if trace is not None:
        headers["traceparent"] = trace
    return headers


# W3C Trace Context, version 00: the only header of a trace passed on (tracestate is free
# text a caller controls; it stays behind).
_TRACEPARENT_RE = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def traceparent(client_headers: Any) -> str | None:
    """The caller's ``traceparent`` if it is a valid W3C one (else None: dropped, never an
    error — tracing is the caller's convenience, not a reason to refuse a call)."""
    value = client_headers.get("traceparent", "")
    return value if value and _TRACEPARENT_RE.fullmatch(value) else None


def is_redirect(status: int) -> bool:
    """Upstream redirects are never followed: a 307/308 would resend the credential and the
    prompt to another origin, a 301/302/303 would turn into a GET of a URL the upstream
    chose (an internal one) whose answer reaches the caller. The registry alone says where
    a model is served; a 3xx is a broken upstream (502), audited as such."""
    return 300 <= status < 400


def is_encoded(headers: Any) -> bool:
    """The upstream compressed its answer although the gateway asked for ``identity``: the
    gateway cannot read what it would pass on (the credential scrub, the error allow-list
    and the usage meter all see compressed bytes, which a caller could decompress), so such
    an answer is a broken upstream (502)."""
    encoding = str(headers.get("content-encoding", "")).strip().lower()
    return encoding not in ("", "identity")


def upstream_url(model: Model, endpoint: Endpoint) -> str:
    return model.upstream_url + endpoint.upstream_suffix
