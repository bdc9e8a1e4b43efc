"""Once-only caches and attempt limiters in Redis, behind the per-process interfaces the
sign-in exchange, the enrollment endpoint and the token checks already use
(``identity.dpop.ReplayCache``, ``identity.enroll_limits.EnrollLimiter``).

These run on the rare paths that call them synchronously (a sign-in, an enrollment, an admin
call made with a token): one exchange blocks the event loop for ~0.1 ms, at most
``REDIS_TIMEOUT_S`` while Redis hangs, and not at all while the link is known down.

When Redis cannot be asked:

* a replay cache answers UNAVAILABLE, and the proof or ID token is refused (fail closed: a
  proof that cannot be checked for replay could be a replay);
* an attempt limiter counts in this process only (the per-process limit of the embedded
  default): refusing every enrollment while Redis is down would add nothing, since codes
  cannot be guessed, and sign-in is refused anyway by the proof's replay check.
"""

from __future__ import annotations

import secrets

import redis

from garrison.identity.dpop import ReplayVerdict
from garrison.identity.enroll_limits import ENROLL_WINDOW_S, EnrollLimiter, source_key
from garrison.shared import scripts
from garrison.shared.redis_link import REDIS_ERRORS, RedisLink

_VERDICTS = (ReplayVerdict.NEW, ReplayVerdict.REPLAYED, ReplayVerdict.FULL)


class RedisReplayCache:
    """``ReplayCache`` over every replica: an entry is ``SET NX PX`` for its remaining
    lifetime; each owner's entries are also counted (at most ``per_owner`` at once), as in
    ``MemoryReplayCache``. ``space`` keeps caches apart ("jti" for DPoP proofs, "idtok" for
    ID tokens). The data plane's admission script records proofs in the same "jti" keys."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        space: str,
        per_owner: int,
        client: redis.Redis | None = None,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.space = space
        self.per_owner = per_owner
        self.client = client if client is not None else link.sync_client()
        self._script = self.client.register_script(scripts.FIRST_USE)

    def first_use(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> ReplayVerdict:
        if not self.link.usable():
            self.link.fallbacks += 1
            return ReplayVerdict.UNAVAILABLE
        entry, owned = scripts.seen_keys(self.prefix, self.space, key, owner)
        ttl_ms = max(1, int((expires_at - now) * 1000))
        cap = self.per_owner if owner is not None else 0
        try:
            code = self._script(keys=[entry, owned], args=[ttl_ms, cap, key])
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
            self.link.fallbacks += 1
            return ReplayVerdict.UNAVAILABLE
        self.link.succeeded()
        return _VERDICTS[int(code)]


class SharedAttemptLimiter(EnrollLimiter):
    """``EnrollLimiter`` over every replica: each source's attempts (and, with ``overall``,
    everyone's) in a sliding window in Redis; this process's own window while Redis cannot
    be asked."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        name: str,
        per_source: int,
        overall: int | None,
        window_s: float = ENROLL_WINDOW_S,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__(per_source=per_source, overall=overall, window_s=window_s)
        self.link = link
        self.base = f"{prefix}:att:{name}"
        self.client = client if client is not None else link.sync_client()
        self._script = self.client.register_script(scripts.ATTEMPT)

    def allow(self, source: str, now: float) -> bool:
        if not self.link.usable():
            self.link.fallbacks += 1
            return super().allow(source, now)
        try:
            allowed = self._script(
                keys=[f"{self.base}:{source_key(source)}", f"{self.base}:*"],
                args=[
                    int(self.window_s * 1000),
                    self.per_source,
                    self.overall or 0,
                    f"{now}:{secrets.token_hex(4)}",
                ],
            )
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
            self.link.fallbacks += 1
            return super().allow(source, now)
        self.link.succeeded()
        return bool(int(allowed))
