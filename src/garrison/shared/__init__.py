"""State several gateway replicas share: admission limits, the DPoP ``jti`` replay cache, the
one-time ID-token cache and the sign-in/enrollment attempt limits, in Redis
(``[storage] redis_url``).

    verdicts      what a shared admission answers (no Redis import: the data plane reads it)
    redis_link    the connection, its timeouts and its health (down → fail fast, log, metric)
    scripts       the Lua scripts: one round trip per decision
    redis_limits  concurrency leases and the call rate, for the data plane (asyncio)
    redis_replay  the replay caches and attempt limiters behind their per-process interfaces

Without ``redis_url`` nothing here but ``verdicts`` is imported and every limit is the
process's own, as in the embedded default.
"""
