"""Redis for tests: the machine's own server (``GARRISON_TEST_REDIS``, default
``redis://127.0.0.1:6379/0``), a key prefix of its own per test (every key Garrison writes
starts with it), deleted when the test ends; and a proxy the tests control, to take Redis
"down" and bring it back without touching the server (never stopped or paused here).

Without a server, the tests that need one are skipped with ``REDIS_SKIP_REASON``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("GARRISON_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIS_SKIP_REASON = (
    "Redis is not reachable at GARRISON_TEST_REDIS (default redis://127.0.0.1:6379/0): the "
    "shared-limits tests need it (CI has it)"
)

_available: bool | None = None


def available() -> bool:
    global _available
    if _available is None:
        try:
            with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1) as client:
                _available = bool(client.ping())
        except (redis.RedisError, OSError):
            _available = False
    return _available


def require() -> None:
    if not available():
        pytest.skip(REDIS_SKIP_REASON)


def delete_prefix(prefix: str) -> int:
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0


@contextlib.contextmanager
def fresh_prefix() -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    require()
    prefix = f"garrison-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        delete_prefix(prefix)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProxy:
    """A TCP proxy on loopback in front of the test Redis: ``down()`` closes every
    connection and refuses new ones (on the same port), ``up()`` serves again."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        self._target = (host, int(port))
        self._db = REDIS_URL.rsplit("/", 1)[1] if REDIS_URL.count("/") > 2 else "0"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self._db}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.close()
        self._pipes.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._pipes.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._pipes.discard(writer)
        self._pipes.discard(up_writer)
