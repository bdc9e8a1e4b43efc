"""What plain and streamed forwarding share: the request to the upstream, the checks its
answer passes before it is read or streamed, bounded reads, and the model name as the
client called it.
"""

from __future__ import annotations

import functools
from contextlib import AbstractAsyncContextManager

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from garrison.domain import Model, UpstreamApi
from garrison.domain.outcomes import CallOutcome
from garrison.errors import GarrisonError, UpstreamFailed
from garrison.gateway import apis
from garrison.gateway.call import Call
from garrison.gateway.credential_echo import model_key
from garrison.gateway.limits import MAX_UPSTREAM_ERROR_BYTES
from garrison.gateway.outcome import upstream_error, upstream_redirect
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import is_encoded, is_redirect, upstream_url
from garrison.gateway.upstream_errors import client_message


def post_upstream(
    state: GatewayState,
    model: Model,
    endpoint: apis.Endpoint,
    payload: bytes,
    headers: CIMultiDict[str],
) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
    """The call's request to its model's upstream (an ``async with`` context giving the
    response): redirects never followed (see ``upstream.is_redirect``), the model's TLS."""
    assert state.session is not None
    return state.session.post(
        upstream_url(model, endpoint),
        data=payload,
        headers=headers,
        timeout=upstream_timeout(state),
        allow_redirects=False,
        ssl=state.upstream_tls.for_model(model),
    )


async def refused_answer(
    state: GatewayState, call: Call, api: UpstreamApi, model: Model, resp: aiohttp.ClientResponse
) -> web.Response | None:
    """The checks every upstream answer passes before it is read or streamed: a redirect is
    not followed (the call ends, a 502), a compressed answer raises ``UpstreamFailed``, and a
    4xx/5xx ends the call with the caller's error in its API's shape. None: go on."""
    if is_redirect(resp.status):
        return upstream_redirect(state, call, api, resp.status)
    if is_encoded(resp.headers):
        raise UpstreamFailed("upstream answer compressed")
    if resp.status >= 400:
        exc, shape = await upstream_failure(resp, model)
        return upstream_error(
            state,
            call,
            api,
            exc,
            CallOutcome.UPSTREAM_STATUS,
            upstream_status=resp.status,
            upstream_message=shape,
        )
    return None


async def upstream_failure(
    resp: aiohttp.ClientResponse, model: Model
) -> tuple[GarrisonError, str | None]:
    """The caller's error for an upstream 4xx/5xx, and for a 4xx the shape of the message
    the caller was shown, for the audit record (``generic``: the status's own message)."""
    try:
        raw = await read_all(resp, MAX_UPSTREAM_ERROR_BYTES)
    except UpstreamFailed:
        raw = b""
    if 400 <= resp.status < 500:
        message, shape = client_message(
            raw, upstream_model=model.upstream_model, model_name=model.name, key=model_key(model)
        )
        exc = apis.error_for_upstream_status(resp.status, message)
        return exc, shape
    return UpstreamFailed(f"upstream answered {resp.status}"), None


def upstream_timeout(state: GatewayState) -> aiohttp.ClientTimeout:
    limits = state.limits
    return _client_timeout(limits.upstream_connect_timeout_s, limits.upstream_read_timeout_s)


@functools.lru_cache(maxsize=8)  # one pair per configuration in force (tests make a few)
def _client_timeout(connect_s: float, read_s: float) -> aiohttp.ClientTimeout:
    """The upstream request's timeouts (immutable: shared by every call; building one per
    call cost 0.6 µs)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)


async def read_all(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole upstream body, or ``UpstreamFailed`` once it passes ``limit`` bytes.

    (``StreamReader.read(n)`` returns what is buffered, not n bytes: loop to the end.)"""
    if resp.content_length is not None and resp.content_length > limit:
        raise UpstreamFailed("upstream answer over the size limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamFailed("upstream answer over the size limit")
        chunks.append(chunk)
    return b"".join(chunks)


def client_model_bytes(model: Model) -> tuple[bytes, bytes]:
    return quoted(model.upstream_model), quoted(model.name)


@functools.lru_cache(maxsize=1024)
def quoted(name: str) -> bytes:
    """A model name as JSON (cached: the same few names on every call)."""
    return orjson.dumps(name)
