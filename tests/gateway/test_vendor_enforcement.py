"""A vendor's terms on the data plane: its status, its contract window, its networks and its
ceiling are enforced on every call, through the running gateway."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.bootstrap import enroll_locally, init, open_directory
from garrison.config import Settings
from garrison.domain import Level, PrincipalKind, VendorStatus, VendorTerms, clock_guard
from garrison.mock import MockConfig, MockUpstream
from garrison.serve import snapshots as runtime
from garrison.serve.snapshots import SNAPSHOT_POLL_S
from garrison.server import Gateway
from garrison.store.vendors import expire_ended_contracts
from tests.conftest import BACKENDS
from tests.support import db, pg
from tests.support.admin import admin_call, make_admin
from tests.support.world import UPSTREAM_KEY, World, seed, world_on

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]
VENDOR = "contractor-co"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    request_id: str


async def call(
    world: World,
    key: str,
    *,
    model: str = "assistant",
    local_addr: tuple[str, int] | None = None,
) -> Reply:
    connector = aiohttp.TCPConnector(local_addr=local_addr) if local_addr else None
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": model, "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers.get("x-request-id", ""))


async def listed_models(world: World, key: str) -> set[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(world.base + "/v1/models", headers={"authorization": f"Bearer {key}"}) as r,
    ):
        assert r.status == 200, await r.read()
        return {m["id"] for m in orjson.loads(await r.read())["data"]}


async def denial_for(world: World, reply: Reply) -> dict[str, Any]:
    """The ``request.denied`` event of this call."""
    await world.settle()
    (event,) = [e for e in world.events("request.denied") if e["request_id"] == reply.request_id]
    return event


def terms(world: World, name: str = VENDOR) -> VendorTerms:
    (org,) = [o for o in world.gateway.state.snapshot.orgs.values() if o.name == name]
    assert org.vendor is not None
    return org.vendor


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


def sql(world: World, statement: str, **params: Any) -> None:
    """A write made around the directory (as a bug, a restore or a hand edit might)."""
    db.sql(world.directory, statement, **params)


# ── a world whose gateway reads an injected clock ──────────────────────────────────────────
class Clock:
    """Wall time plus an offset the test moves (the clock keeps running)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.monotonic = 0.0  # how far the monotonic clock was moved along

    def __call__(self) -> float:
        return time.time() + self.offset

    def set(self, moment: float) -> None:
        """Time passes until ``moment``: both clocks move."""
        step = moment - time.time() - self.offset
        self.offset += step
        self.monotonic += step

    def jump(self, moment: float) -> None:
        """Only the wall clock is set to ``moment`` (a bad time source): no time passed."""
        self.offset = moment - time.time()


@dataclass
class ClockedWorld:
    world: World
    clock: Clock


async def start_clocked_world(root: Path, database_url: str | None = None) -> ClockedWorld:
    done = init(root / "data", database_url=database_url)
    admin_key = enroll_locally(done.settings, done.codes[0].code.reveal())
    mock = MockUpstream(MockConfig(expected_api_key=UPSTREAM_KEY))
    upstream_port = await mock.start("127.0.0.1", 0)
    directory = open_directory(done.settings, actor="test")
    keys = seed(directory, f"http://127.0.0.1:{upstream_port}/v1", time.time())
    settings = Settings(
        database_url=done.settings.database_url,
        key_dir=done.settings.key_dir,
        host="127.0.0.1",
        port=0,
        witness_dir=done.settings.witness_dir,
    )
    clock = Clock()
    # Time that truly passes moves both clocks: the monotonic clock follows the offset too,
    # so the contract clock's jump guard sees no jump (tests of a jump move `clock.jump`).
    gateway = Gateway(settings, clock=clock, monotonic=lambda: time.monotonic() + clock.monotonic)
    await gateway.start()
    world = World(
        root=root,
        settings=settings,
        directory=directory,
        mock=mock,
        gateway=gateway,
        keys=keys,
        admin_key=admin_key.key.token.reveal(),
    )
    return ClockedWorld(world, clock)


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Each test on each database."""
    async with world_on(request.param, tmp_path) as w:
        yield w


@pytest.fixture(params=BACKENDS)
async def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClockedWorld]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg.fresh_database()) if request.param == "postgresql" else None
        cw = await start_clocked_world(tmp_path, url)
        try:
            yield cw
        finally:
            await cw.world.gateway.stop()
            await cw.world.mock.stop()
            cw.world.directory.engine.dispose()


@pytest.fixture
async def idle_watcher(
    monkeypatch: pytest.MonkeyPatch, clocked: ClockedWorld
) -> AsyncIterator[ClockedWorld]:
    """The clocked world with its snapshot watcher (and so the contract clock) idle: any
    enforcement seen comes from the snapshot already loaded, with no job and no reload."""
    monkeypatch.setattr(runtime, "SNAPSHOT_POLL_S", 3600.0)
    await asyncio.sleep(SNAPSHOT_POLL_S * 3)  # let the pending tick pass; the next is in 1 h
    yield clocked


# ── status ─────────────────────────────────────────────────────────────────────────────────
async def test_active_vendor_principal_is_served(world: World) -> None:
    reply = await call(world, world.keys["bob"])
    assert reply.status == 200, reply.body
    assert len(world.mock.seen) == 1


async def test_suspended_vendor_is_refused_with_vendor_inactive(world: World) -> None:
    world.directory.set_vendor_status(VENDOR, VendorStatus.SUSPENDED, now=time.time())
    await world.reload()
    reply = await call(world, world.keys["bob"])
    assert reply.status == 401, reply.body
    event = await denial_for(world, reply)
    assert event["data"]["reasons"] == ["vendor.inactive"]
    assert event["credential_id"] == key_id(world.keys["bob"])


async def test_suspended_vendor_call_never_reaches_the_upstream(world: World) -> None:
    world.directory.set_vendor_status(VENDOR, VendorStatus.SUSPENDED, now=time.time())
    await world.reload()
    await call(world, world.keys["bob"])
    assert world.mock.seen == []


async def test_reactivated_vendor_is_served_again(world: World) -> None:
    world.directory.set_vendor_status(VENDOR, VendorStatus.SUSPENDED, now=time.time())
    await world.reload()
    assert (await call(world, world.keys["bob"])).status == 401
    world.directory.set_vendor_status(VENDOR, VendorStatus.ACTIVE, now=time.time())
    await world.reload()
    reply = await call(world, world.keys["bob"])
    assert reply.status == 200, reply.body
    assert len(world.mock.seen) == 1


async def test_suspension_reaches_the_data_plane_without_an_explicit_reload(
    world: World,
) -> None:
    world.directory.set_vendor_status(VENDOR, VendorStatus.SUSPENDED, now=time.time())
    deadline = time.monotonic() + 40 * SNAPSHOT_POLL_S
    while terms(world).status is not VendorStatus.SUSPENDED and time.monotonic() < deadline:
        await asyncio.sleep(SNAPSHOT_POLL_S / 5)
    assert (await call(world, world.keys["bob"])).status == 401


async def test_suspending_a_vendor_leaves_internal_people_alone(world: World) -> None:
    world.directory.set_vendor_status(VENDOR, VendorStatus.SUSPENDED, now=time.time())
    await world.reload()
    assert (await call(world, world.keys["carol"])).status == 200


# ── the contract window ────────────────────────────────────────────────────────────────────
async def test_call_just_before_the_contract_end_is_served(
    idle_watcher: ClockedWorld,
) -> None:
    world, clock = idle_watcher.world, idle_watcher.clock
    clock.set(terms(world).contract_end - 1)
    reply = await call(world, world.keys["bob"])
    assert reply.status == 200, reply.body


async def test_contract_end_stops_the_vendor_at_once_without_a_reload(
    idle_watcher: ClockedWorld,
) -> None:
    world, clock = idle_watcher.world, idle_watcher.clock
    version = world.gateway.state.snapshot.version
    clock.set(terms(world).contract_end)
    reply = await call(world, world.keys["bob"])
    assert reply.status == 401, reply.body
    assert world.mock.seen == []
    assert world.gateway.state.snapshot.version == version  # nothing was reloaded
    assert terms(world).status is VendorStatus.ACTIVE  # and nothing had to run first


async def test_contract_end_refusal_names_the_vendor_contract(
    idle_watcher: ClockedWorld,
) -> None:
    """The audit log says why: the vendor's contract ended (not merely that a key expired)."""
    world, clock = idle_watcher.world, idle_watcher.clock
    clock.set(terms(world).contract_end + 1)
    reply = await call(world, world.keys["bob"])
    event = await denial_for(world, reply)
    assert "vendor.outside_contract" in event["data"]["reasons"]


async def test_key_outliving_the_contract_is_still_stopped_at_the_contract_end(
    idle_watcher: ClockedWorld,
) -> None:
    """Defence in depth: a key whose stored expiry escaped the clip is stopped by the terms."""
    world, clock = idle_watcher.world, idle_watcher.clock
    end = terms(world).contract_end
    sql(
        world,
        "UPDATE credentials SET expires_at = :at WHERE id = :id",
        at=end + 30 * 86400,
        id=key_id(world.keys["bob"]),
    )
    await world.reload()
    clock.set(end + 1)
    reply = await call(world, world.keys["bob"])
    assert reply.status == 401, reply.body
    assert world.mock.seen == []
    event = await denial_for(world, reply)
    assert event["data"]["reasons"] == ["vendor.outside_contract"]


async def test_contract_clock_records_vendor_expired_within_a_few_polls(
    clocked: ClockedWorld,
) -> None:
    world, clock = clocked.world, clocked.clock
    clock.set(terms(world).contract_end + 1)
    deadline = time.monotonic() + 10 * SNAPSHOT_POLL_S + 0.5
    while not world.events("vendor.expired") and time.monotonic() < deadline:
        await asyncio.sleep(SNAPSHOT_POLL_S / 5)
    (event,) = world.events("vendor.expired")
    assert event["actor"] == "contract-clock"
    assert (event["data"]["name"], event["data"]["from"], event["data"]["to"]) == (
        VENDOR,
        "active",
        "expired",
    )


async def test_contract_clock_expiry_reaches_the_snapshot(clocked: ClockedWorld) -> None:
    world, clock = clocked.world, clocked.clock
    clock.set(terms(world).contract_end + 1)
    deadline = time.monotonic() + 20 * SNAPSHOT_POLL_S + 0.5
    while terms(world).status is not VendorStatus.EXPIRED and time.monotonic() < deadline:
        await asyncio.sleep(SNAPSHOT_POLL_S / 5)
    assert terms(world).status is VendorStatus.EXPIRED
    assert len(world.events("vendor.expired")) == 1  # recorded once, not on every tick


# ── the vendor's networks ──────────────────────────────────────────────────────────────────
@pytest.fixture
async def edge_key(world: World) -> str:
    """A key of dave, of a vendor whose only network is 127.0.0.2/32."""
    now = time.time()
    d = world.directory
    d.create_vendor(
        "edge-co",
        sponsor="admin",
        contract_start=now - 86400,
        contract_end=now + 30 * 86400,
        networks=["127.0.0.2/32"],
        seat_limit=2,
        ceiling_level=Level.INTERNAL,
        now=now,
    )
    d.set_vendor_status("edge-co", VendorStatus.ACTIVE, now=now)
    d.create_principal(
        "dave", org="edge-co", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    token = d.create_key("dave", now=now).key.token.reveal()
    await world.reload()
    return token


async def test_call_from_inside_the_vendor_networks_is_served(world: World, edge_key: str) -> None:
    reply = await call(world, edge_key, local_addr=("127.0.0.2", 0))
    assert reply.status == 200, reply.body
    await world.settle()
    (allowed,) = world.events("request.allowed")
    assert allowed["data"]["client_address"] == "127.0.0.2"


async def test_call_from_outside_the_vendor_networks_is_refused(
    world: World, edge_key: str
) -> None:
    reply = await call(world, edge_key)  # from 127.0.0.1
    assert reply.status == 401, reply.body
    assert world.mock.seen == []


async def test_refusal_from_outside_the_vendor_networks_names_the_vendor_rule(
    world: World, edge_key: str
) -> None:
    """The audit log says the call came from outside the vendor's egress ranges."""
    reply = await call(world, edge_key)  # from 127.0.0.1
    event = await denial_for(world, reply)
    assert "vendor.network_not_allowed" in event["data"]["reasons"]
    assert event["data"]["client_address"] == "127.0.0.1"


async def test_key_without_networks_is_still_held_to_the_vendor_networks(
    world: World, edge_key: str
) -> None:
    """Defence in depth: a vendor key stored with no networks is bound by the vendor's."""
    sql(world, "UPDATE credentials SET networks = '[]' WHERE id = :id", id=key_id(edge_key))
    await world.reload()
    reply = await call(world, edge_key)  # from 127.0.0.1
    assert reply.status == 401, reply.body
    assert world.mock.seen == []
    event = await denial_for(world, reply)
    assert event["data"]["reasons"] == ["vendor.network_not_allowed"]


# ── the ceiling ────────────────────────────────────────────────────────────────────────────
async def test_vendor_principal_lists_no_model_above_the_ceiling(world: World) -> None:
    ceiling = terms(world)
    models = world.gateway.state.snapshot.models
    listed = await listed_models(world, world.keys["bob"])
    assert listed  # bob sees the internal models
    for name in listed:
        assert ceiling.ceiling_allows(models[name].level, models[name].compartments), name
    assert "cyber-model" in await listed_models(world, world.keys["alice"])  # it does exist


async def test_vendor_principal_above_the_ceiling_still_lists_nothing_above_it(
    world: World,
) -> None:
    """Defence in depth: a clearance raised around the directory does not lift the ceiling."""
    sql(
        world,
        "UPDATE principals SET clearance = :c, compartments = :comps WHERE name = 'bob'",
        c=int(Level.CRITICAL),
        comps='["cyber"]',
    )
    await world.reload()
    listed = await listed_models(world, world.keys["bob"])
    assert "cyber-model" not in listed
    assert "assistant" in listed


async def test_vendor_principal_above_the_ceiling_is_refused_the_model(world: World) -> None:
    sql(
        world,
        "UPDATE principals SET clearance = :c, compartments = :comps WHERE name = 'bob'",
        c=int(Level.CRITICAL),
        comps='["cyber"]',
    )
    await world.reload()
    reply = await call(world, world.keys["bob"], model="cyber-model")
    assert reply.status == 404, reply.body
    assert world.mock.seen == []
    event = await denial_for(world, reply)
    assert event["data"]["reasons"] == ["vendor.ceiling"]


# ── a wall clock that jumps ────────────────────────────────────────────────────────────────
async def test_a_wall_clock_jump_pauses_expiries_and_raises_an_alert(
    clocked: ClockedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, clock = clocked.world, clocked.clock
    monkeypatch.setattr(clock_guard, "CLOCK_AGREE_S", 0.5)
    clock.jump(terms(world).contract_end + 86400)  # a month ahead, in an instant
    deadline = time.monotonic() + 10
    while not world.events("clock.jumped") and time.monotonic() < deadline:
        await asyncio.sleep(SNAPSHOT_POLL_S)
    (jumped,) = world.events("clock.jumped")
    assert jumped["data"]["skew_s"] > 30 * 86400 - 60
    await asyncio.sleep(20 * SNAPSHOT_POLL_S)  # many contract-clock ticks
    assert world.events("vendor.expired") == []
    assert terms(world).status is VendorStatus.ACTIVE
    status, alerts = await admin_call(world, world.admin_key, "GET", "/alerts")
    assert status == 200
    assert any(a["rule_id"] == "clock-jump" for a in alerts)
    # The time source is fixed: once the clocks agree again for the named period, the
    # contract clock resumes, and the contract (not ended in truth) expires nothing.
    clock.jump(time.time())
    deadline = time.monotonic() + 10
    while not world.events("clock.agreed") and time.monotonic() < deadline:
        await asyncio.sleep(SNAPSHOT_POLL_S)
    assert world.events("clock.agreed")
    assert terms(world).status is VendorStatus.ACTIVE


async def test_a_vendor_expired_by_a_clock_jump_is_restored_by_two_admins(world: World) -> None:
    # A process that started with a wrong clock expired the vendor (its guard had no earlier
    # reading to compare with).
    expire_ended_contracts(world.directory, terms(world).contract_end + 1)
    await world.reload()
    assert terms(world).status is VendorStatus.EXPIRED
    first, second = world.admin_key, make_admin(world, "admin-two", ["security-admin"])
    body = {"status": "active", "reason": "expired by a clock jump"}
    status, proposed = await admin_call(world, first, "POST", f"/vendors/{VENDOR}/status", body)
    assert status == 202, proposed
    assert terms(world).status is VendorStatus.EXPIRED  # nothing until a second admin
    change_id = proposed["pending"]["id"]
    status, _ = await admin_call(world, first, "POST", f"/changes/{change_id}/approve")
    assert status == 403  # not by the proposer
    status, done = await admin_call(world, second, "POST", f"/changes/{change_id}/approve")
    assert status == 200, done
    await world.reload()
    assert terms(world).status is VendorStatus.ACTIVE
    reply = await call(world, world.keys["bob"])
    assert reply.status == 200
