"""The connection to Redis, its timeouts, and its health.

Every exchange is bounded by ``REDIS_TIMEOUT_S``. A failure (refused, reset, timed out, an
error reply) marks the link down: an ERROR line says so once (the address only, never a
password from the URL), ``garrison_shared_limits_up`` reads 0, and for ``REDIS_RETRY_S``
nobody waits on Redis at all: callers get "unavailable" at once and apply the documented
fallback. Then one exchange probes it; the first success marks it up again (a WARNING line).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("garrison.shared")

# One exchange with Redis: it answers in well under a millisecond on the same network, so a
# quarter second without an answer means down or partitioned; a call waits at most this long
# (and then only once per REDIS_RETRY_S, see below) before its fallback applies.
REDIS_TIMEOUT_S = 0.25
# While Redis is down, nobody waits on it: one probe a second finds it back.
REDIS_RETRY_S = 1.0
# Connections per process for the data plane's admission (asyncio). Exchanges take ~0.1 ms,
# so 64 cover thousands of calls a second; more waiting callers queue for one.
REDIS_MAX_CONNECTIONS = 64
# Default prefix of every key Garrison writes (``[storage] redis_prefix``): one Redis can
# serve several deployments, and the tests give each run its own.
REDIS_PREFIX = "garrison"

# What counts as "Redis cannot be asked" (the redis-py errors, and OSError beneath them).
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def redacted(url: str) -> str:
    """``host:port/db`` of a Redis URL: what logs may say (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or 6379
    return f"{parts.scheme}://{host}:{port}{parts.path or '/0'}"


class RedisLink:
    """Health of the connection, shared by every user of one Redis URL in a process."""

    def __init__(self, url: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.where = redacted(url)
        self.up = True
        self.failures = 0  # exchanges that failed since start
        self.fallbacks = 0  # decisions taken without Redis (counted by their callers)
        self._monotonic = monotonic
        self._next_try = 0.0

    def usable(self) -> bool:
        """Whether to try Redis now: up, or down and due for its next probe (taken here)."""
        if self.up:
            return True
        now = self._monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + REDIS_RETRY_S
        return True

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._next_try = self._monotonic() + REDIS_RETRY_S
        if self.up:
            self.up = False
            log.error(
                "SHARED LIMITS UNAVAILABLE: Redis at %s: %s; calls to restricted and critical "
                "models are refused, DPoP proofs and sign-ins are refused, lower levels use "
                "this process's limits",
                self.where,
                type(exc).__name__,
            )

    def succeeded(self) -> None:
        if not self.up:
            self.up = True
            log.warning("shared limits recovered: Redis at %s answers again", self.where)

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
            "decode_responses": False,
        }

    def sync_client(self) -> redis.Redis:
        """For the rare paths that cannot wait asynchronously (sign-in, enrollment, the
        admin plane's proofs): one exchange blocks the event loop for ~0.1 ms, at most
        ``REDIS_TIMEOUT_S`` when Redis hangs, once per ``REDIS_RETRY_S``."""
        # No retries inside redis-py: the fallback applies at once, the link re-probes.
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), **self._options())

    def async_client(self) -> redis.asyncio.Redis:
        # A blocking pool: past REDIS_MAX_CONNECTIONS exchanges at once, callers wait for a
        # connection (within the timeout) instead of failing as if Redis were down.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_TIMEOUT_S,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
            **self._options(),
        )
        return redis.asyncio.Redis.from_pool(pool)  # owns it: aclose() closes the pool


def check_url(url: str) -> str:
    """``url`` if it is a redis:// or rediss:// (TLS) or unix:// URL; ValueError else."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
    return url
