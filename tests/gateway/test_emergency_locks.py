"""A lock is the one write that must succeed while the database (and so the audit log) cannot
be written: journalled, enforced at once, recorded in the log when it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from garrison.serve.wiring import data_dir
from garrison.store import sqlite_path
from garrison.store.emergency_locks import JOURNAL_FILE, EmergencyJournal
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


CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


async def _stream_started(world: World, session: aiohttp.ClientSession) -> aiohttp.ClientResponse:
    resp = await session.post(
        world.base + CHAT,
        json={
            "model": "m-slow-stream",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        headers={"authorization": f"Bearer {world.keys['alice']}"},
    )
    assert resp.status == 200
    assert await resp.content.readany()
    return resp


async def test_a_lock_placed_while_the_database_is_down_holds_and_is_recorded_later(
    world: World,
) -> None:
    journal = EmergencyJournal(data_dir(world.settings) / JOURNAL_FILE)
    async with aiohttp.ClientSession() as session:
        stream = await _stream_started(world, session)
        await world.settle()
        with database_lost(world.settings.database_url):
            status, lock = await admin_call(
                world,
                world.admin_key,
                "POST",
                "/locks",
                {"kind": "principal", "target": "alice", "reason": "leaked key, log down"},
            )
            assert status in (200, 201), lock
            assert lock["emergency"] is True and lock["target_name"] == "alice"
            # Enforced at once: alice's stream in flight is cut with an error event.
            rest = await asyncio.wait_for(stream.read(), timeout=5)
            last = [line for line in rest.splitlines() if line.startswith(b"data:")][-1]
            assert orjson.loads(last[5:])["error"]["code"] == "forbidden"
            assert [r["id"] for _, r in journal.pending()] == [lock["id"]]
            if sqlite_path(world.settings.database_url) is not None:
                # Readable on SQLite (only writes are held): the log cannot hold it yet. (A
                # lost PostgreSQL cannot be read either; the journal above holds it.)
                assert world.events("lock.created") == []
        stream.close()
    # The database is back: the lock is folded into it and into the audit log.
    deadline = time.monotonic() + 10
    while journal.pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert journal.pending() == []
    await world.settle()
    (created,) = world.events("lock.created")
    assert created["data"]["lock_id"] == lock["id"]
    assert created["data"]["emergency"] is True
    assert created["data"]["placed_at"] == lock["created_at"]
    assert created["actor"] == lock["created_by"]
    status, listed = await admin_call(world, world.admin_key, "GET", "/locks")
    assert status == 200 and lock["id"] in {item["id"] for item in listed}
    # And it still holds once recorded.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + CHAT,
            json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {world.keys['alice']}"},
        ) as resp,
    ):
        assert resp.status == 403
        assert orjson.loads(await resp.read())["error"]["code"] == "forbidden"


def test_the_journal_is_preallocated_and_survives_a_torn_slot(tmp_path: object) -> None:
    from pathlib import Path

    from garrison.store.emergency_locks import EMERGENCY_SLOT_BYTES, EMERGENCY_SLOTS

    path = Path(str(tmp_path)) / JOURNAL_FILE
    journal = EmergencyJournal(path)
    journal.preallocate()
    assert path.stat().st_size == EMERGENCY_SLOTS * EMERGENCY_SLOT_BYTES
    assert path.stat().st_mode & 0o777 == 0o600
    first = journal.place({"id": "lck_1"})
    second = journal.place({"id": "lck_2"})
    assert (first, second) == (0, 1)
    with open(path, "r+b") as handle:  # a crash mid-write of a third slot
        handle.seek(2 * EMERGENCY_SLOT_BYTES)
        handle.write(b'{"id": "lck_')
    assert [r["id"] for _, r in journal.pending()] == ["lck_1", "lck_2"]
    journal.clear(first)
    assert [r["id"] for _, r in journal.pending()] == ["lck_2"]
    assert journal.place({"id": "lck_3"}) == 0  # the cleared slot is reused
