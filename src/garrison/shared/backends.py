"""Everything a process keeps in Redis, built from one URL (the composition root calls
``connect`` only when ``[storage] redis_url`` is set: the embedded default never imports
Redis)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from garrison.identity.dpop import DPOP_REPLAY_PER_OWNER_MAX
from garrison.identity.enroll_limits import ENROLL_ATTEMPTS_GLOBAL, ENROLL_ATTEMPTS_PER_SOURCE
from garrison.shared.redis_limits import RedisLimits
from garrison.shared.redis_link import REDIS_ERRORS, RedisLink
from garrison.shared.redis_replay import RedisReplayCache, SharedAttemptLimiter


@dataclass(frozen=True, slots=True)
class SharedBackends:
    link: RedisLink
    limits: RedisLimits  # the data plane's admission (asyncio)
    jti: RedisReplayCache  # DPoP proofs of sign-ins and admin calls (the data plane's ride
    # with ``limits``), in the same keys
    id_tokens: RedisReplayCache  # ID tokens exchanged once
    signin_attempts: SharedAttemptLimiter
    enroll_attempts: SharedAttemptLimiter

    async def start(self) -> None:
        """Start the lease keeper; say at once (in the log) whether Redis answers."""
        self.limits.start()
        try:
            await self.limits.client.ping()
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
        else:
            self.link.succeeded()

    async def close(self) -> None:
        await self.limits.close()
        for cache in (self.jti, self.id_tokens, self.signin_attempts, self.enroll_attempts):
            with contextlib.suppress(*REDIS_ERRORS):
                cache.client.close()


def connect(
    url: str,
    prefix: str,
    *,
    id_token_per_owner: int,
    signin_per_source: int,
) -> SharedBackends:
    """The shared state at ``url`` under ``prefix`` (nothing is contacted until used).
    ``id_token_per_owner`` and ``signin_per_source`` are the sign-in exchange's limits."""
    link = RedisLink(url)
    sync = link.sync_client()  # one pool for the synchronous paths
    return SharedBackends(
        link=link,
        limits=RedisLimits(link, prefix=prefix),
        jti=RedisReplayCache(
            link, prefix=prefix, space="jti", per_owner=DPOP_REPLAY_PER_OWNER_MAX, client=sync
        ),
        id_tokens=RedisReplayCache(
            link, prefix=prefix, space="idtok", per_owner=id_token_per_owner, client=sync
        ),
        signin_attempts=SharedAttemptLimiter(
            link,
            prefix=prefix,
            name="signin",
            per_source=signin_per_source,
            overall=None,
            client=sync,
        ),
        enroll_attempts=SharedAttemptLimiter(
            link,
            prefix=prefix,
            name="enroll",
            per_source=ENROLL_ATTEMPTS_PER_SOURCE,
            overall=ENROLL_ATTEMPTS_GLOBAL,
            client=sync,
        ),
    )
