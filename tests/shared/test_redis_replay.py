"""The replay caches and attempt limiters in Redis: one replica sees what another recorded;
a cache that cannot be asked refuses (fail closed); a limiter falls back to its process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from garrison.domain import Reason
from garrison.identity.dpop import (
    InvalidProof,
    ReplayVerdict,
    generate_proof_key,
    make_proof,
    verify_proof,
)
from garrison.shared.redis_link import RedisLink
from garrison.shared.redis_replay import RedisReplayCache, SharedAttemptLimiter
from tests.support.redis_server import REDIS_URL, closed_port, fresh_prefix

URL = "https://garrison.example/v1/chat/completions"


@pytest.fixture
def prefix() -> Iterator[str]:
    with fresh_prefix() as p:
        yield p


def cache(prefix: str, url: str = REDIS_URL, per_owner: int = 100) -> RedisReplayCache:
    return RedisReplayCache(RedisLink(url), prefix=prefix, space="jti", per_owner=per_owner)


def test_an_entry_recorded_by_one_replica_is_seen_by_another(prefix: str) -> None:
    a, b = cache(prefix), cache(prefix)
    now = time.time()
    assert a.first_use("k1", expires_at=now + 60, now=now, owner="p") is ReplayVerdict.NEW
    assert b.first_use("k1", expires_at=now + 60, now=now, owner="q") is ReplayVerdict.REPLAYED
    assert b.first_use("k2", expires_at=now + 60, now=now) is ReplayVerdict.NEW


def test_an_entry_lasts_only_its_lifetime(prefix: str) -> None:
    a = cache(prefix)
    now = time.time()
    assert a.first_use("k", expires_at=now + 0.1, now=now) is ReplayVerdict.NEW
    time.sleep(0.2)
    assert a.first_use("k", expires_at=now + 60, now=now) is ReplayVerdict.NEW


def test_one_owner_holds_at_most_its_share(prefix: str) -> None:
    a = cache(prefix, per_owner=2)
    now = time.time()
    verdicts = [a.first_use(f"k{n}", expires_at=now + 60, now=now, owner="p") for n in range(3)]
    assert verdicts == [ReplayVerdict.NEW, ReplayVerdict.NEW, ReplayVerdict.FULL]
    assert a.first_use("k9", expires_at=now + 60, now=now, owner="q") is ReplayVerdict.NEW


def test_caches_in_different_spaces_do_not_meet(prefix: str) -> None:
    link = RedisLink(REDIS_URL)
    jti = RedisReplayCache(link, prefix=prefix, space="jti", per_owner=10)
    idtok = RedisReplayCache(link, prefix=prefix, space="idtok", per_owner=10)
    now = time.time()
    assert jti.first_use("same", expires_at=now + 60, now=now) is ReplayVerdict.NEW
    assert idtok.first_use("same", expires_at=now + 60, now=now) is ReplayVerdict.NEW


def test_a_proof_replayed_to_another_replica_is_refused(prefix: str) -> None:
    key = generate_proof_key()
    now = time.time()
    proof = make_proof(key, method="POST", url=URL, now=now)

    def check(replay: RedisReplayCache) -> str:
        return verify_proof(
            proof, method="POST", url=URL, now=now, access_token=None, replay=replay
        )

    assert check(cache(prefix)) == key.thumbprint()
    with pytest.raises(InvalidProof) as refused:
        check(cache(prefix))
    assert refused.value.reason is Reason.DPOP_REPLAY


def test_a_proof_that_cannot_be_checked_for_replay_is_refused() -> None:
    down = cache("unused", f"redis://127.0.0.1:{closed_port()}/0")
    now = time.time()
    proof = make_proof(generate_proof_key(), method="POST", url=URL, now=now)
    with pytest.raises(InvalidProof) as refused:
        verify_proof(proof, method="POST", url=URL, now=now, access_token=None, replay=down)
    assert refused.value.reason is Reason.DPOP_REPLAY_UNCHECKED
    assert not down.link.up


Limiter = Callable[..., SharedAttemptLimiter]


@pytest.fixture
def limiter(prefix: str) -> Limiter:
    def make(url: str = REDIS_URL, **kw: int | None) -> SharedAttemptLimiter:
        args: dict[str, int | None] = {"per_source": 2, "overall": None, **kw}
        return SharedAttemptLimiter(
            RedisLink(url),
            prefix=prefix,
            name="signin",
            per_source=args["per_source"] or 0,
            overall=args["overall"],
        )

    return make


def test_attempts_from_one_source_are_counted_over_both_replicas(limiter: Limiter) -> None:
    a, b = limiter(), limiter()
    now = time.time()
    assert [a.allow("10.0.0.1", now), b.allow("10.0.0.1", now)] == [True, True]
    assert not a.allow("10.0.0.1", now) and not b.allow("10.0.0.1", now)
    assert b.allow("10.0.0.2", now)


def test_an_ipv6_source_is_counted_by_its_64_over_replicas(limiter: Limiter) -> None:
    a, b = limiter(), limiter()
    now = time.time()
    assert a.allow("2001:db8::1", now) and b.allow("2001:db8::2", now)
    assert not a.allow("2001:db8::3", now)


def test_everyones_budget_is_shared_too(limiter: Limiter) -> None:
    a, b = limiter(per_source=10, overall=3), limiter(per_source=10, overall=3)
    now = time.time()
    assert [a.allow(f"10.0.0.{n}", now) for n in range(2)] == [True, True]
    assert b.allow("10.0.0.9", now)
    assert not b.allow("10.0.0.10", now)


def test_a_limiter_without_redis_counts_in_its_process(limiter: Limiter) -> None:
    down = limiter(f"redis://127.0.0.1:{closed_port()}/0")
    now = time.time()
    assert [down.allow("10.0.0.1", now) for _ in range(3)] == [True, True, False]
    assert not down.link.up and down.link.fallbacks == 3
