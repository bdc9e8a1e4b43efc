"""Red-team findings on the shared limits in Redis (issue 17).

A call's handler is cancelled when its client goes away (the gateway runs with
``handler_cancellation``) or when a lock cuts it. If that cancellation lands while the call
waits for its admission script, neither the slot the script took for it nor the releases of
*other* principals' ended calls that rode along with it may be lost: a lost release holds a
victim's slot until its lease expires (``LEASE_TTL_S``), so one tenant cutting its own calls
would hold other tenants' concurrency slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from garrison.shared.redis_limits import RedisLimits
from garrison.shared.redis_link import RedisLink
from garrison.shared.verdicts import SharedAnswer, SharedVerdict
from tests.support.redis_server import REDIS_URL, fresh_prefix

Make = Callable[[], RedisLimits]


@pytest.fixture
async def replicas() -> AsyncIterator[Make]:
    made: list[RedisLimits] = []
    with fresh_prefix() as prefix:

        def make() -> RedisLimits:
            limits = RedisLimits(RedisLink(REDIS_URL), prefix=prefix)
            limits.start()
            made.append(limits)
            return limits

        try:
            yield make
        finally:
            for limits in made:
                await limits.close()


async def _enter(limits: RedisLimits, cred: str, who: str) -> SharedAnswer:
    return await limits.enter(cred, who, per_credential=1, per_principal=1, per_minute=1000)


# Loop turns after which the admission is cancelled: each lands the cancellation at another
# point of redis-py's exchange (taking a pooled connection, sending, reading the answer).
CUT_AFTER_TURNS = range(1, 8)


async def _cut_mid_admission(limits: RedisLimits, cred: str, who: str, turns: int) -> None:
    """Start an admission and cancel it while it talks to Redis (a client that hung up right
    after its headers, or a lock cutting the call): the cancellation must reach the caller,
    whatever redis-py was doing when it landed."""
    task = asyncio.create_task(_enter(limits, cred, who))
    for _ in range(turns):
        await asyncio.sleep(0)
    if task.done():  # the exchange was over before the cut: an ordinary call that ends
        answer = task.result()
        if answer.lease is not None:
            answer.lease.release()
        return
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cut_admission_does_not_lose_the_releases_it_carried(replicas: Make) -> None:
    limits = replicas()
    # Warm the script cache and the connection (the cut must land on the ADMIT round trip).
    warm = await _enter(limits, "warm", "warm")
    assert warm.lease is not None
    warm.lease.release()
    await limits.flush()
    victim = await _enter(limits, "victim-key", "victim")
    assert victim.verdict is SharedVerdict.ADMITTED and victim.lease is not None
    for turns in CUT_AFTER_TURNS:
        victim.lease.release()  # queued: the next admission carries it
        await _cut_mid_admission(limits, f"attacker-key-{turns}", "attacker", turns)
        await asyncio.sleep(0.05)
        await limits.flush()
        # The victim's call ended: its one slot is free again.
        victim = await _enter(limits, "victim-key", "victim")
        assert victim.verdict is SharedVerdict.ADMITTED, turns
        assert victim.lease is not None


async def test_a_cut_admission_does_not_keep_the_slot_it_took(replicas: Make) -> None:
    limits = replicas()
    warm = await _enter(limits, "warm", "warm")
    assert warm.lease is not None
    warm.lease.release()
    await limits.flush()
    for turns in CUT_AFTER_TURNS:
        await _cut_mid_admission(limits, "key", "someone", turns)
        await asyncio.sleep(0.05)
        await limits.flush()
        # No call of this principal is running: its one slot is free.
        again = await _enter(limits, "key", "someone")
        assert again.verdict is SharedVerdict.ADMITTED, turns
        assert again.lease is not None
        again.lease.release()
        await limits.flush()
