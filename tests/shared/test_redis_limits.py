"""Shared admission in Redis: what two replicas (two ``RedisLimits`` on one prefix) see of
each other's calls, leases of a killed replica, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest

from garrison.shared.redis_limits import RedisLimits
from garrison.shared.redis_link import REDIS_RETRY_S, REDIS_TIMEOUT_S, RedisLink
from garrison.shared.verdicts import ProofEntry, SharedAnswer, SharedVerdict
from tests.support.redis_server import REDIS_URL, RedisProxy, closed_port, fresh_prefix

Make = Callable[..., RedisLimits]
CAPS = {"per_credential": 2, "per_principal": 3, "per_minute": 1000}
# The lease TTL of the test that outlives it by renewal.
RENEWED_TTL_S = 1.0


@pytest.fixture
async def replicas() -> AsyncIterator[Make]:
    made: list[RedisLimits] = []
    with fresh_prefix() as prefix:

        def make(
            url: str = REDIS_URL, lease_ttl_s: float = 30.0, renew_s: float = 10.0
        ) -> RedisLimits:
            limits = RedisLimits(
                RedisLink(url), prefix=prefix, lease_ttl_s=lease_ttl_s, renew_s=renew_s
            )
            limits.start()
            made.append(limits)
            return limits

        try:
            yield make
        finally:
            for limits in made:
                await limits.close()


async def enter(
    limits: RedisLimits,
    cred: str = "key1",
    who: str = "alice",
    *,
    proof: ProofEntry | None = None,
    **caps: int,
) -> SharedAnswer:
    merged = {**CAPS, **caps}
    return await limits.enter(
        cred,
        who,
        per_credential=merged["per_credential"],
        per_principal=merged["per_principal"],
        per_minute=merged["per_minute"],
        proof=proof,
    )


async def test_a_credentials_calls_in_flight_are_counted_over_both_replicas(
    replicas: Make,
) -> None:
    a, b = replicas(), replicas()
    first = await enter(a)
    assert first.verdict is SharedVerdict.ADMITTED
    assert (await enter(b)).verdict is SharedVerdict.ADMITTED
    assert (await enter(b)).verdict is SharedVerdict.CREDENTIAL_CONCURRENCY
    assert (await enter(a)).verdict is SharedVerdict.CREDENTIAL_CONCURRENCY
    assert first.lease is not None
    first.lease.release()
    await a.flush()
    assert (await enter(b)).verdict is SharedVerdict.ADMITTED


async def test_a_principals_calls_are_counted_over_all_its_keys_and_replicas(
    replicas: Make,
) -> None:
    a, b = replicas(), replicas()
    for replica, cred in ((a, "k1"), (b, "k2"), (a, "k3")):
        assert (await enter(replica, cred)).verdict is SharedVerdict.ADMITTED
    assert (await enter(b, "k4")).verdict is SharedVerdict.PRINCIPAL_CONCURRENCY
    # Another principal is not affected.
    assert (await enter(b, "k5", "bob")).verdict is SharedVerdict.ADMITTED


async def test_calls_per_minute_hold_over_both_replicas(replicas: Make) -> None:
    a, b = replicas(), replicas()
    answers = []
    for replica in (a, b, a, b):
        answer = await enter(replica, per_minute=3, per_credential=100, per_principal=100)
        answers.append(answer.verdict)
        if answer.lease is not None:
            answer.lease.release()
    assert answers[:3] == [SharedVerdict.ADMITTED] * 3
    assert answers[3] is SharedVerdict.RATE_LIMITED
    over = await enter(a, per_minute=3, per_credential=100, per_principal=100)
    # One call every 20 s at 3 a minute: the next fits in at most that.
    assert over.verdict is SharedVerdict.RATE_LIMITED and 0 < over.retry_after_s <= 20


async def test_the_slots_of_a_killed_replica_come_back_when_their_leases_lapse(
    replicas: Make,
) -> None:
    killed = replicas(lease_ttl_s=0.3, renew_s=60)
    survivor = replicas()
    for _ in range(2):
        assert (await enter(killed)).verdict is SharedVerdict.ADMITTED
    # The killed replica neither releases nor renews.
    await killed.close()
    assert (await enter(survivor)).verdict is SharedVerdict.CREDENTIAL_CONCURRENCY
    await asyncio.sleep(0.4)
    assert (await enter(survivor)).verdict is SharedVerdict.ADMITTED


async def test_a_running_calls_lease_is_renewed_past_its_ttl(replicas: Make) -> None:
    # Renewed ten times per TTL: the leases lapse only if renewal stalls for most of a
    # second (a 0.3 s TTL renewed every 0.1 s would lapse on a loaded machine holding the
    # event loop or the Redis round trip for 0.2 s).
    running = replicas(lease_ttl_s=RENEWED_TTL_S, renew_s=RENEWED_TTL_S / 10)
    other = replicas()
    for _ in range(2):
        assert (await enter(running)).verdict is SharedVerdict.ADMITTED
    await asyncio.sleep(2.5 * RENEWED_TTL_S)
    assert (await enter(other)).verdict is SharedVerdict.CREDENTIAL_CONCURRENCY


async def test_a_proof_recorded_by_one_replica_is_a_replay_on_the_other(replicas: Make) -> None:
    a, b = replicas(), replicas()
    proof = ProofEntry("jkt:jti-1", 61.0, "alice", 5000)
    assert (await enter(a, proof=proof)).verdict is SharedVerdict.ADMITTED
    assert (await enter(b, proof=proof)).verdict is SharedVerdict.REPLAYED
    assert await b.record_proof(proof) is SharedVerdict.REPLAYED
    fresh = ProofEntry("jkt:jti-2", 61.0, "alice", 5000)
    assert await b.record_proof(fresh) is SharedVerdict.ADMITTED


async def test_an_owners_share_of_the_replay_cache_is_bounded(replicas: Make) -> None:
    a = replicas()
    for n in range(3):
        assert await a.record_proof(ProofEntry(f"k:{n}", 61.0, "alice", 3)) is (
            SharedVerdict.ADMITTED
        )
    assert await a.record_proof(ProofEntry("k:4", 61.0, "alice", 3)) is SharedVerdict.REPLAY_FULL
    assert await a.record_proof(ProofEntry("k:4", 61.0, "bob", 3)) is SharedVerdict.ADMITTED


async def test_redis_down_answers_unavailable_at_once_and_says_so(
    replicas: Make, caplog: pytest.LogCaptureFixture
) -> None:
    down = replicas(f"redis://127.0.0.1:{closed_port()}/0")
    with caplog.at_level(logging.ERROR, logger="garrison.shared"):
        assert (await enter(down)).verdict is SharedVerdict.UNAVAILABLE
    assert not down.up
    assert "SHARED LIMITS UNAVAILABLE" in caplog.text
    # Known down: nobody waits on Redis until the next probe.
    started = time.perf_counter()
    for _ in range(50):
        assert (await enter(down)).verdict is SharedVerdict.UNAVAILABLE
    assert time.perf_counter() - started < REDIS_TIMEOUT_S


async def test_a_replica_finds_redis_again_and_sends_the_releases_it_kept(
    replicas: Make, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = RedisProxy()
    await proxy.up()
    try:
        flaky = replicas(proxy.url)
        steady = replicas()
        held = await enter(flaky)
        assert held.lease is not None
        assert (await enter(steady)).verdict is SharedVerdict.ADMITTED
        await proxy.down()
        held.lease.release()  # queued: Redis cannot be told now
        assert (await enter(flaky)).verdict is SharedVerdict.UNAVAILABLE
        assert flaky.pending_releases == 2
        assert (await enter(steady)).verdict is SharedVerdict.CREDENTIAL_CONCURRENCY
        await proxy.up()
        await asyncio.sleep(REDIS_RETRY_S + 0.2)
        with caplog.at_level(logging.WARNING, logger="garrison.shared"):
            assert (await enter(flaky)).verdict is SharedVerdict.ADMITTED
        assert flaky.up and "recovered" in caplog.text
        deadline = time.monotonic() + 3
        while flaky.pending_releases and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert flaky.pending_releases == 0
    finally:
        await proxy.down()


# ── the named limits ───────────────────────────────────────────────────────────────────────
async def test_a_silent_redis_costs_a_call_at_most_the_timeout(replicas: Make) -> None:
    """A Redis that accepts and never answers (a partition): the call waits
    ``REDIS_TIMEOUT_S``, then gets its fallback."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # never answers
        finally:
            writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        silent = replicas(f"redis://127.0.0.1:{port}/0")
        started = time.perf_counter()
        assert (await enter(silent)).verdict is SharedVerdict.UNAVAILABLE
        waited = time.perf_counter() - started
        assert REDIS_TIMEOUT_S * 0.8 <= waited < REDIS_TIMEOUT_S + 0.5
    finally:
        server.close()
        await server.wait_closed()


async def test_ended_calls_ride_with_the_next_admission_a_bounded_number_at_a_time(
    replicas: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from garrison.shared import redis_limits

    monkeypatch.setattr(redis_limits, "RELEASES_PER_ADMISSION", 1)
    monkeypatch.setattr(redis_limits, "RELEASE_DELAY_S", 60.0)  # no batch of their own
    a = replicas()
    leases = [(await enter(a, f"k{n}")).lease for n in range(3)]
    for lease in leases:
        assert lease is not None
        lease.release()
    assert a.pending_releases == 6  # two keys each
    await enter(a, "other")
    assert a.pending_releases == 5


async def test_releases_kept_while_redis_is_down_are_bounded(
    replicas: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from garrison.shared import redis_limits

    monkeypatch.setattr(redis_limits, "RELEASE_BACKLOG_MAX", 4)
    proxy = RedisProxy()
    await proxy.up()
    try:
        flaky = replicas(proxy.url)
        leases = [(await enter(flaky, f"k{n}")).lease for n in range(3)]
        await proxy.down()
        for lease in leases:
            assert lease is not None
            lease.release()
        assert flaky.pending_releases == 4  # the oldest dropped: their leases lapse alone
    finally:
        await proxy.down()


async def test_leases_are_renewed_in_bounded_batches(
    replicas: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from garrison.shared import redis_limits

    monkeypatch.setattr(redis_limits, "LEASE_BATCH_MAX", 2)
    a = replicas()
    for n in range(3):
        assert (await enter(a, f"k{n}")).verdict is SharedVerdict.ADMITTED
    assert await a.renew() == 6  # 3 calls × 2 keys, sent 2 at a time
