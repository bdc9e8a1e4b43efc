"""The Lua scripts Garrison runs in Redis, and the names of the keys they touch. Each
decision is one script (atomic, one round trip, sent by its SHA after the first use).

Times inside the scripts come from Redis's own clock (``TIME``), one clock for every
replica; durations come in as milliseconds.

Keys (``<p>`` is the prefix):

    <p>:lease:c:<credential>   sorted set: lease id → expiry (ms), calls in flight per key
    <p>:lease:p:<principal>    the same per principal
    <p>:rate:p:<principal>     the principal's theoretical arrival time (GCRA, ms)
    <p>:jti:<jkt>:<jti>        a DPoP proof seen (SET NX PX), for its remaining window
    <p>:jti-owner:<owner>      sorted set: an owner's proofs → expiry (their share's count)
    <p>:idtok:<digest>         an ID token exchanged (and :idtok-owner:<issuer>)
    <p>:att:<limiter>:<source> sorted set of attempt times (and :att:<limiter>:* for all)
"""

from __future__ import annotations


def lease_keys(prefix: str, credential_id: str, principal_id: str) -> tuple[str, str]:
    return f"{prefix}:lease:c:{credential_id}", f"{prefix}:lease:p:{principal_id}"


def rate_key(prefix: str, principal_id: str) -> str:
    return f"{prefix}:rate:p:{principal_id}"


def seen_keys(prefix: str, space: str, key: str, owner: str | None) -> tuple[str, str]:
    """The entry's key and its owner's count key (``space``: "jti" or "idtok")."""
    return f"{prefix}:{space}:{key}", f"{prefix}:{space}-owner:{owner or ''}"


# Shared by the scripts below: now in ms from Redis's clock; record a once-only entry.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS[a] the entry, KEYS[a+1] its owner's sorted set; ttl ms, owner cap (0: no owner).
# Returns 0 new, 1 seen, 2 the owner's share is full.
_FIRST_USE = """
local function first_use(entry, owned, member, ttl, cap)
  if redis.call('EXISTS', entry) == 1 then return 1 end
  if cap > 0 then
    redis.call('ZREMRANGEBYSCORE', owned, '-inf', now)
    if redis.call('ZCARD', owned) >= cap then return 2 end
    redis.call('ZADD', owned, now + ttl, member)
    if redis.call('PTTL', owned) < ttl then redis.call('PEXPIRE', owned, ttl) end
  end
  redis.call('SET', entry, '1', 'PX', ttl)
  return 0
end
"""

# Admission of one call. KEYS: credential leases, principal leases, principal rate, proof
# entry, proof owner's set, then leases to give back (ended calls riding along: no round trip
# of their own). ARGV: lease id, lease ttl ms, per-credential cap, per-principal cap, calls
# per minute, proof ttl ms (0: no proof), proof owner cap, proof key, then the lease ids of
# those keys. Returns {verdict, retry ms}; verdicts as garrison.shared.verdicts.SharedVerdict.
ADMIT = (
    _NOW
    + _FIRST_USE
    + """
for i = 6, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i + 3]) end
local proof_ttl = tonumber(ARGV[6])
if proof_ttl > 0 then
  local seen = first_use(KEYS[4], KEYS[5], ARGV[8], proof_ttl, tonumber(ARGV[7]))
  if seen ~= 0 then return {seen, 0} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {3, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {4, 0} end
-- GCRA: a minute's worth of calls at once, then one every 60000/limit ms.
local interval = 60000 / tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[3])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > 60000 then return {5, math.ceil(next_tat - now - 60000)} end
local rate_ttl = math.max(1, math.ceil(next_tat - now))
redis.call('SET', KEYS[3], string.format('%.3f', next_tat), 'PX', rate_ttl)
local lease_ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease_ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease_ttl)
redis.call('ZADD', KEYS[2], now + lease_ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], lease_ttl)
return {0, 0}
"""
)

# Give leases back: KEYS[i] holds lease ARGV[i].
RELEASE = """
for i, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[i]) end
return #KEYS
"""

# Keep leases of calls still running: KEYS[i] holds lease ARGV[i + 1]; ARGV[1] is the ttl ms.
# Only leases still there are renewed (XX): one given back or expired is not brought back.
RENEW = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return #KEYS
"""
)

# A once-only entry (replay caches). KEYS: entry, owner's set. ARGV: ttl ms, owner cap (0:
# none), member. Returns 0 new, 1 seen, 2 full.
FIRST_USE = (
    _NOW
    + _FIRST_USE
    + """
return first_use(KEYS[1], KEYS[2], ARGV[3], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)

# Attempt limiter (sliding window). KEYS: the source's set, everyone's set. ARGV: window ms,
# per-source cap, overall cap (0: none), member (unique). Returns 1 allowed, 0 refused.
ATTEMPT = (
    _NOW
    + """
local window = tonumber(ARGV[1])
local since = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local overall = tonumber(ARGV[3])
if overall > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
  if redis.call('ZCARD', KEYS[2]) >= overall then return 0 end
  redis.call('ZADD', KEYS[2], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], window)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""
)
