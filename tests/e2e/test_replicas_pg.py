"""Three gateway replicas on one PostgreSQL database: a lock placed through one replica's
admin API is enforced by the others within the propagation target (LISTEN/NOTIFY wakes
them), cuts a live stream on another replica, and a replica that loses the database fails
closed by the staleness rule. State is set only through the admin API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from garrison.config import Settings
from garrison.domain import Level
from garrison.gateway.containment import stale_refusal
from garrison.gateway.limits import GatewayLimits
from garrison.gateway.state import StaleMode
from garrison.serve.snapshots import SNAPSHOT_POLL_LISTENING_S
from garrison.serve.wiring import data_dir
from garrison.store.change_feed import CHANNEL, pg_conninfo
from tests.support import pg
from tests.support.replicas import Replicas, blocked, start_replicas, stop_replicas

# The propagation target (issue 17) with room for a loaded test machine: the figure itself
# is measured by bench/lock_propagation.py.
PROPAGATED_WITHIN_S = 1.0
# Longest any one step may take before the test fails instead of hanging.
GUARD_S = 30.0


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[Replicas]:
    with pg.fresh_database() as url:
        replicas = await start_replicas(tmp_path, url, 3)
        try:
            await _seed(replicas)
            yield replicas
        finally:
            await stop_replicas(replicas)


async def _seed(r: Replicas) -> None:
    upstream = f"http://127.0.0.1:{r.mock.port}/v1"
    for name, upstream_model in (("m", "mock-small"), ("m-slow", "slow-stream")):
        await r.admin(
            0,
            "POST",
            "/models",
            {
                "name": name,
                "upstream_url": upstream,
                "upstream_model": upstream_model,
                "auth_style": "none",
            },
            want=201,
        )
    await r.admin(
        0, "POST", "/principals", {"name": "svc", "org": "internal", "kind": "service"}, want=201
    )
    issued = await r.admin(0, "POST", "/keys", {"principal": "svc"}, want=201)
    r.keys["svc"] = issued["key"]
    for i in range(len(r.gateways)):  # every replica knows the key (the feed carried it)
        await _until_status(r, i, 200)


async def _chat(r: Replicas, i: int, model: str = "m") -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{r.base(i)}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {r.keys['svc']}"},
        ) as resp,
    ):
        payload = await resp.read()
        return resp.status, orjson.loads(payload) if payload else None


async def _until_status(r: Replicas, i: int, status: int, within: float = GUARD_S) -> float:
    """Seconds until replica ``i`` answers ``status`` (polling every millisecond or so)."""
    t0 = time.monotonic()
    while True:
        got, _ = await _chat(r, i)
        if got == status:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, f"replica {i} still answers {got}"
        await asyncio.sleep(0.001)


async def test_a_lock_placed_on_one_replica_is_refused_by_the_others(three: Replicas) -> None:
    r = three
    t0 = time.monotonic()
    lock = await r.admin(
        0, "POST", "/locks", {"kind": "principal", "target": "svc", "reason": "ir"}, want=201
    )
    waits = await asyncio.gather(*(_until_status(r, i, 403) for i in (1, 2)))
    elapsed = time.monotonic() - t0
    assert elapsed < PROPAGATED_WITHIN_S, waits
    for i in range(3):
        status, body = await _chat(r, i)
        assert status == 403
        assert set(body) == {"error"}  # the API's own error shape
        assert body["error"]["code"] == "forbidden"
        assert "ir" not in body["error"]["message"] and lock["id"] not in str(body)
    # Lifted on replica C: every replica serves again.
    await r.admin(2, "POST", f"/locks/{lock['id']}/lift", {"reason": "resolved"}, want=200)
    for i in range(3):
        await _until_status(r, i, 200, within=PROPAGATED_WITHIN_S * 5)


async def test_a_lock_on_one_replica_cuts_a_live_stream_on_another(three: Replicas) -> None:
    r = three
    body = {
        "model": "m-slow",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    events: list[bytes] = []
    locked_at = 0.0
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{r.base(1)}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {r.keys['svc']}"},
        ) as resp,
    ):
        assert resp.status == 200
        async with asyncio.timeout(GUARD_S):
            async for line in resp.content:
                if line.startswith(b"data:"):
                    events.append(line)
                if len(events) == 3 and not locked_at:
                    await r.admin(
                        0,
                        "POST",
                        "/locks",
                        {"kind": "principal", "target": "svc", "reason": "ir"},
                        want=201,
                    )
                    locked_at = time.monotonic()
        cut_after = time.monotonic() - locked_at
    assert locked_at and cut_after < PROPAGATED_WITHIN_S
    last = orjson.loads(events[-1].removeprefix(b"data:").strip())
    assert last["error"]["code"] == "forbidden"  # the final event, in the API's shape


async def test_the_listener_lets_replicas_poll_slowly(three: Replicas) -> None:
    deadline = time.monotonic() + GUARD_S
    for gateway in three.gateways:
        listener = gateway.snapshots.listener
        assert listener is not None
        while not listener.healthy:  # its connection opens in its own thread
            assert time.monotonic() < deadline, "the listener never connected"
            await asyncio.sleep(0.01)
        assert gateway.snapshots._poll_interval() == SNAPSHOT_POLL_LISTENING_S


# How long the NOTIFY flood lasts, and notifications sent per statement (distinct payloads:
# PostgreSQL folds identical ones sent in one transaction).
FLOOD_S = 2.0
FLOOD_BATCH = 200


def _flood(url: str, stop: threading.Event, sent: list[int]) -> None:
    """``NOTIFY`` the change channel as fast as one connection can, as any role able to
    connect could (no table is written: nothing changed)."""
    with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
        n = 0
        while not stop.is_set():
            conn.execute(
                "SELECT pg_notify(%s, g::text) FROM generate_series(%s::int, %s::int) AS g",
                (CHANNEL, n, n + FLOOD_BATCH - 1),
            )
            n += FLOOD_BATCH
        sent.append(n)


async def test_a_notify_flood_costs_no_reloads_and_a_real_change_still_propagates(
    three: Replicas,
) -> None:
    """Red team (issue 17): any database role may NOTIFY the channel. A notification is a
    hint: it costs a version read at most every NOTIFIED_READ_MIN_S, a reload only when the
    feed's version changed, and a lock placed during the flood still propagates in time."""
    r = three
    reloads = [0] * len(r.gateways)
    for i, gateway in enumerate(r.gateways):
        snapshots = gateway.snapshots
        real = snapshots.reload

        async def counted(i: int = i, real: Any = real) -> None:
            reloads[i] += 1
            await real()

        snapshots.reload = counted  # type: ignore[method-assign]
    stop, sent = threading.Event(), list[int]()
    flood = threading.Thread(target=_flood, args=(r.settings.database_url, stop, sent))
    flood.start()
    try:
        await asyncio.sleep(FLOOD_S / 2)
        quiet = list(reloads)
        t0 = time.monotonic()
        lock = await r.admin(
            0, "POST", "/locks", {"kind": "principal", "target": "svc", "reason": "ir"}, want=201
        )
        waits = await asyncio.gather(*(_until_status(r, i, 403) for i in (1, 2)))
        assert time.monotonic() - t0 < PROPAGATED_WITHIN_S, waits
        await asyncio.sleep(FLOOD_S / 2)
    finally:
        stop.set()
        await asyncio.to_thread(flood.join, GUARD_S)
    assert sent[0] >= 1000, sent  # the flood was one
    # Half the flood, before the lock: no replica reloaded at all.
    assert quiet == [0, 0, 0], quiet
    # The lock is one change (the admin write may reload its own replica once more).
    assert all(n <= 2 for n in reloads), reloads
    await r.admin(2, "POST", f"/locks/{lock['id']}/lift", {"reason": "resolved"}, want=200)


@pytest.fixture
async def stale_pair(tmp_path: Path) -> AsyncIterator[tuple[Replicas, str]]:
    """Two replicas whose lock view is stale after 0.5 s without a database read."""
    with pg.fresh_database() as url:
        replicas = await start_replicas(
            tmp_path, url, 2, limits=GatewayLimits(lock_view_stale_s=0.5)
        )
        try:
            await _seed(replicas)
            yield replicas, url
        finally:
            await stop_replicas(replicas)


async def test_a_replica_that_loses_the_database_fails_closed(
    stale_pair: tuple[Replicas, str],
) -> None:
    """PostgreSQL lost: no read refreshes the lock view, so after ``lock_view_stale_s`` the
    staleness rule refuses restricted and critical models (the default stale_mode); with
    the audit log on the same database every other call is refused too (no record, no
    forwarding). Back: the listener reconnects, the view is fresh, calls are served."""
    r, url = stale_pair
    restricted = SimpleNamespace(level=Level.RESTRICTED)
    internal = SimpleNamespace(level=Level.INTERNAL)
    for gateway in r.gateways:
        assert gateway.state.stale_mode is StaleMode.RESTRICTED  # the default
        assert not stale_refusal(gateway.state, restricted)  # type: ignore[arg-type]
    name = url.rsplit("/", 1)[1]
    with blocked(name):  # nobody may connect; every session is ended
        deadline = time.monotonic() + GUARD_S
        for gateway in r.gateways:
            while not stale_refusal(gateway.state, restricted):  # type: ignore[arg-type]
                assert time.monotonic() < deadline, "the lock view never went stale"
                await asyncio.sleep(0.05)
            assert not stale_refusal(gateway.state, internal)  # type: ignore[arg-type]
            listener = gateway.snapshots.listener
            assert listener is not None
            assert not listener.healthy
            assert gateway.snapshots._poll_interval() == 0.0  # polling every tick again
        for i in range(2):
            status, body = await _chat(r, i)
            assert status == 503, body  # fail closed: nothing forwarded without its record
            assert set(body) == {"error"}
    # The database is back: the listener reconnects and the replicas serve again.
    for i in range(2):
        await _until_status(r, i, 200)
    for gateway in r.gateways:
        assert not stale_refusal(gateway.state, restricted)  # type: ignore[arg-type]
        listener = gateway.snapshots.listener
        assert listener is not None
        # Calls are served as soon as a poll reads the database; the listener comes back
        # after its own reconnection backoff, which may end a little later.
        deadline = time.monotonic() + GUARD_S
        while not listener.healthy:
            assert time.monotonic() < deadline, "the change listener never reconnected"
            await asyncio.sleep(0.05)


def test_a_replica_keeps_its_own_files_in_its_data_directory(tmp_path: Path) -> None:
    """The emergency lock journal and the disk check: beside the SQLite file, or on
    PostgreSQL in the directory holding the key files (there is no database file)."""
    sqlite = Settings.for_data_dir(tmp_path / "data")
    assert data_dir(sqlite) == (tmp_path / "data").resolve()
    on_pg = Settings(
        database_url="postgresql+psycopg://garrison@db.example/garrison",
        key_dir=tmp_path / "replica" / "keys",
    )
    assert data_dir(on_pg) == tmp_path / "replica"


async def test_an_emergency_lock_placed_while_postgresql_is_lost_reaches_every_replica(
    stale_pair: tuple[Replicas, str],
) -> None:
    """The database cannot be read or written: a lock placed through replica A's admin API
    is authorised and resolved from A's snapshot, journalled and enforced by A at once;
    when the database is back A folds it in, and the change feed carries it to B."""
    r, url = stale_pair
    name = url.rsplit("/", 1)[1]
    with blocked(name):
        lock = await r.admin(
            0, "POST", "/locks", {"kind": "principal", "target": "svc", "reason": "ir"}, want=201
        )
        assert lock["emergency"] is True
        status, body = await _chat(r, 0)
        assert status == 403 and body["error"]["code"] == "forbidden"  # enforced on A now
    # Back: folded into the database by A (its 2 s upkeep tick), refused by B too.
    await _until_status(r, 1, 403)
    listed = await r.admin(1, "GET", "/locks", want=200)
    assert lock["id"] in str(listed)
