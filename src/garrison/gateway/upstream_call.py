"""What plain and streamed forwarding share: the upstream timeouts, bounded reads, and the
model name as the client called it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import aiohttp
import orjson

from garrison.domain import Model
from garrison.errors import (
    UpstreamFailed,
)
from garrison.gateway.state import GatewayState

if TYPE_CHECKING:
    pass


def upstream_timeout(state: GatewayState) -> aiohttp.ClientTimeout:
    limits = state.limits
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=limits.upstream_connect_timeout_s,
        sock_read=limits.upstream_read_timeout_s,
    )


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
