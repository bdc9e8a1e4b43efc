"""One front door for the audit log: a directory change made through the admin API reaches
the SIEM export and detection, in leaf order, by the time the call answers.

Before the outbox, directory changes inserted their own rows into ``audit_events`` and only
the writer's own events were exported, so every vendor, key, lock and incident was missing
from the JSON-lines export.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.audit import AuditEvent, EventName
from garrison.audit.events import EncodedRecord
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

DAY = 86400.0
# Every admin change below and the event name its record carries.
CHANGES: list[tuple[str, dict[str, Any], str]] = [
    (
        "/vendors",
        {
            "name": "acme-labs",
            "sponsor": "carol",
            "contract_end": datetime.fromtimestamp(time.time() + 30 * DAY, UTC).isoformat(),
            "networks": ["127.0.0.0/8"],
            "seat_limit": 3,
        },
        "org.created",
    ),
    ("/keys/self", {"note": "laptop"}, "credential.created"),
    ("/locks", {"kind": "principal", "target": "bob", "reason": "ir"}, "lock.created"),
    ("/incidents", {"title": "bob's key seen from two networks"}, "incident.opened"),
]


@pytest.fixture
async def exported(tmp_path: Path) -> AsyncIterator[tuple[World, Path]]:
    out = tmp_path / "siem" / "audit.jsonl"
    world = await start_world(tmp_path, audit_jsonl=out)
    try:
        yield world, out
    finally:
        await stop_world(world)


async def post(world: World, path: str, body: dict[str, Any]) -> str:
    """POST an admin change; its request id (the call must succeed)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{world.base}/admin/v1{path}",
            data=orjson.dumps(body),
            headers={
                "authorization": f"Bearer {world.admin_key}",
                "content-type": "application/json",
            },
        ) as resp,
    ):
        payload = await resp.read()
        assert resp.status in (200, 201), (path, resp.status, payload)
        return resp.headers["x-request-id"]


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_admin_changes_are_exported_in_leaf_order_before_the_call_answers(
    exported: tuple[World, Path],
) -> None:
    world, out = exported
    for path, body, name in CHANGES:
        request_id = await post(world, path, body)
        # No waiting: the answer means the record is in the tree and the export.
        mine = [r for r in lines(out) if r["request_id"] == request_id]
        assert [r["name"] for r in mine if r["name"] == name] == [name], (path, mine)
    await world.settle()
    records = lines(out)
    indices = [r["i"] for r in records]
    assert indices == list(range(indices[0], indices[0] + len(indices))), "gaps or disorder"
    # The export is exactly the log from where this gateway started: every committed
    # record, byte for byte, none twice.
    log = world.raw_audit().split(b"\n")
    assert out.read_bytes().splitlines() == log[indices[0] : indices[0] + len(indices)]
    assert {name for _, _, name in CHANGES} <= {r["name"] for r in records}


async def test_detection_listeners_see_admin_changes_with_their_leaf_index(
    world: World,
) -> None:
    seen: list[tuple[int, str, str | None]] = []

    def listener(first: int, events: Sequence[AuditEvent]) -> None:
        seen.extend((first + k, e.name.value, e.request_id) for k, e in enumerate(events))

    world.gateway.sink.add_listener(listener)
    processed = world.gateway.monitor.processed if world.gateway.monitor else 0
    request_id = await post(world, "/locks", {"kind": "principal", "target": "bob", "reason": "x"})
    ours = [(i, name) for i, name, rid in seen if rid == request_id]
    assert [name for _, name in ours] == ["lock.created"]
    index = ours[0][0]
    assert world.events()[index]["request_id"] == request_id
    assert world.events()[index]["i"] == index
    # The detection service itself was handed the event too (it queues, then processes).
    assert world.gateway.monitor is not None
    deadline = time.monotonic() + 5
    while world.gateway.monitor.processed <= processed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.gateway.monitor.processed > processed


def test_only_the_sink_imports_the_leaf_writer_and_only_it_inserts_leaves() -> None:
    """The recipe/hazmat fence: ``garrison.audit.leaves`` is imported by the sinks alone (the
    shared recipe and its two databases), and no other source file inserts into
    ``audit_events``."""
    src = Path(__file__).resolve().parents[2] / "src" / "garrison"
    importers, inserters = [], []
    for file in src.rglob("*.py"):
        text = file.read_text()
        rel = file.relative_to(src).as_posix()
        if "garrison.audit.leaves" in text or "from garrison.audit import leaves" in text:
            importers.append(rel)
        if "INSERT INTO audit_events" in text or "insert(schema.audit_events" in text:
            inserters.append(rel)
    assert sorted(importers) == ["audit/pg_sink.py", "audit/sqlite_sink.py", "audit/tree_sink.py"]
    assert inserters == ["audit/leaves.py"]


def test_an_outbox_record_indexed_later_is_byte_for_byte_encode_i() -> None:
    """Stored without its index and indexed by the writer, the record is exactly
    ``encode(i)``, whatever its data holds (text shaped like the neighbour key included)."""
    e = AuditEvent(
        EventName.LOCK_CREATED,
        at=1.5,
        actor='a","model":',
        data={"model": ',"model":"x"', "i": 3},
        model="m",
    )
    unindexed = e.unindexed()
    assert "i" not in orjson.loads(unindexed)
    for n in (0, 7, 10**9):
        assert EncodedRecord.from_unindexed(unindexed).record(n) == e.encode(n)
