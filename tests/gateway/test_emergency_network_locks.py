"""Attack: a network lock placed while the database is down, written in IPv4-mapped form.

The normal lock path writes ``::ffff:127.0.0.2/128`` as the IPv4 network it means; the
emergency path (the database cannot be written) parsed it with ``ipaddress`` alone and
enforced an IPv6 network that no client address (compared in IPv4 form) ever falls in: the
lock looked placed, during the very outage it was placed for, and did nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from garrison.serve.wiring import data_dir
from tests.conftest import BACKENDS
from tests.support.admin import admin_call
from tests.support.db import database_lost
from tests.support.world import World, world_on

pytestmark = pytest.mark.e2e


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Each test on each database (on PostgreSQL the outage is the database refusing every
    connection)."""
    async with world_on(request.param, tmp_path) as w:
        yield w


USER = [{"role": "user", "content": "hello"}]


async def chat_status(world: World, key: str, local_addr: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": "assistant", "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        await resp.read()
        return resp.status


async def test_a_mapped_network_lock_placed_in_an_outage_holds_at_once(world: World) -> None:
    carol = world.keys["carol"]
    await world.settle()
    with database_lost(world.settings.database_url):
        status, lock = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/locks",
            {"kind": "network", "target": "::ffff:127.0.0.2/128", "reason": "mapped, log down"},
        )
        assert status in (200, 201), lock
        assert lock["emergency"] is True
        assert lock["target"] == "127.0.0.2/32"
        assert await chat_status(world, carol, "127.0.0.2") == 403
        assert await chat_status(world, carol, "127.0.0.3") != 403


async def test_locks_placed_at_once_in_an_outage_are_all_kept(world: World) -> None:
    """Two admins (or two processes) locking at the same moment took the same free journal
    slot: one lock overwrote the other, was never folded into the database, and vanished
    from enforcement when the outage ended."""
    import asyncio
    import time

    from garrison.store.emergency_locks import JOURNAL_FILE, EmergencyJournal

    journal = EmergencyJournal(data_dir(world.settings) / JOURNAL_FILE)
    nets = [f"127.0.9.{n}/32" for n in range(1, 9)]
    await world.settle()
    with database_lost(world.settings.database_url):
        answers = await asyncio.gather(
            *(
                admin_call(
                    world,
                    world.admin_key,
                    "POST",
                    "/locks",
                    {"kind": "network", "target": net, "reason": "many at once"},
                )
                for net in nets
            )
        )
        assert all(status in (200, 201) for status, _ in answers), answers
        assert sorted(r["target"] for _, r in journal.pending()) == sorted(nets)
    deadline = time.monotonic() + 10
    while journal.pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await world.settle()
    assert sorted(e["data"]["target"] for e in world.events("lock.created")) == sorted(nets)


async def test_a_lock_placed_through_one_process_holds_in_the_other_during_the_outage(
    world: World,
) -> None:
    """Two gateway processes on one database (a documented set-up) share the data directory
    and so the journal; a lock placed through one while the database was down was enforced
    by that process alone until the database came back: the other one, failing open,
    forwarded the locked principal's calls for the whole outage."""
    import asyncio
    import dataclasses
    import time

    from garrison.server import Gateway

    other = Gateway(dataclasses.replace(world.settings, port=0, audit_fail_open=True))
    await other.start()
    try:
        other_base = f"http://127.0.0.1:{other.port}"
        carol = world.keys["carol"]

        async def other_status() -> int:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    other_base + "/v1/chat/completions",
                    data=orjson.dumps({"model": "assistant", "messages": USER}),
                    headers={"authorization": f"Bearer {carol}"},
                ) as resp,
            ):
                await resp.read()
                return resp.status

        assert await other_status() == 200
        await world.settle()
        with database_lost(world.settings.database_url):
            status, lock = await admin_call(
                world,
                world.admin_key,
                "POST",
                "/locks",
                {"kind": "principal", "target": "carol", "reason": "leaked, log down"},
            )
            assert status in (200, 201) and lock["emergency"] is True, lock
            deadline = time.monotonic() + 8
            seen = await other_status()
            while seen != 403 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                seen = await other_status()
            assert seen == 403
        # Folded (by either process) and still held by both once the database is back.
        deadline = time.monotonic() + 10
        while not world.events("lock.created") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await world.settle()
        assert len(world.events("lock.created")) == 1
        assert await other_status() == 403
    finally:
        await other.stop()


async def test_a_lock_with_a_long_non_ascii_reason_is_placed_in_an_outage(world: World) -> None:
    """A 500-character reason of four-byte characters did not fit the journal's slot: the
    lock was refused (503) exactly when nothing else could contain the incident."""
    from garrison.admin.emergency import SHORTENED_MARK

    carol = world.keys["carol"]
    await world.settle()
    with database_lost(world.settings.database_url):
        status, lock = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/locks",
            {"kind": "principal", "target": "carol", "reason": "🔒" * 500},
        )
        assert status in (200, 201), lock
        assert lock["emergency"] is True
        assert lock["reason"].startswith("🔒" * 100) and lock["reason"].endswith(SHORTENED_MARK)
        assert await chat_status(world, carol, "127.0.0.3") == 403
