"""Property: no sequence of admin API calls breaks a vendor's terms in the directory.

Each example sets up a fresh vendor through the running admin API (an internal sponsor who
is a vendor-manager, the vendor, and a vendor-manager inside the vendor with a loopback-bound
key), then plays a random sequence of calls by the security-admin, the sponsor and the
in-vendor manager: vendor updates (networks, ceiling, contract end, seats), status changes,
principals added and updated (clearance, compartments, enable / disable), keys created with
random networks and lifetimes, rotated with random grace, revoked, the vendor's keys rotated
all at once, and a second security-admin approving the two-person changes (raised access)
the first proposed. Refusals are expected; a server error never is. After every call the
database itself must show, for every vendor:

* no active principal above the vendor's ceiling, and no more active ones than seats;
* no live key (unrevoked, unexpired) of an active principal with no network or a network
  outside the vendor's networks, or expiring after the contract end.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from garrison.store.directory import KEY_MAX_LIFETIME_S, KEY_ROTATION_GRACE_MAX_S
from tests.support import db
from tests.support.admin import admin_call, invite_and_enroll, lift_enroll_limits, make_admin
from tests.support.world import World

pytestmark = pytest.mark.e2e

DAY = 86400.0
LEVELS = ["public", "internal", "restricted", "critical"]
COMPARTMENTS = ["alpha", "bravo"]
# The in-vendor manager calls from loopback, so every vendor starts with 127.0.0.0/8 in its
# networks; narrowing away from it is refused while the manager's key is live.
VENDOR_NETWORK_POOL = [
    "127.0.0.0/8",
    "127.0.0.0/24",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.168.0.0/16",
    "2001:db8::/32",
]
KEY_NETWORK_POOL = [
    "127.0.0.1/32",
    "127.0.0.0/8",
    "10.1.2.0/24",
    "10.0.0.0/8",
    "10.2.0.0/16",
    "192.168.3.0/24",
    "2001:db8:1::/48",
    "0.0.0.0/0",
]
LIFETIMES = [None, 60.0, 3600.0, 10 * DAY, 45 * DAY, float(KEY_MAX_LIFETIME_S)]
GRACES = [0.0, 60.0, 3600.0, float(KEY_ROTATION_GRACE_MAX_S)]
ACTORS = ["sec", "sponsor", "vm"]

_serial = itertools.count()
# The second security-admin of each world (by its root), who approves two-person changes.
_approvers: dict[str, str] = {}


# ── the database, read directly ────────────────────────────────────────────────────────────
def inside(net: str, vendor_nets: list[str]) -> bool:
    inner = ipaddress.ip_network(net)
    for value in vendor_nets:
        outer = ipaddress.ip_network(value)
        if inner.version == outer.version and inner.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False


def violations(world: World) -> list[str]:
    """Every way the directory breaks a vendor's terms right now (empty: none)."""
    now = time.time()
    found: list[str] = []
    # Three reads, grouped here (a read per vendor and per person made every step of a
    # PostgreSQL example cost dozens of round trips).
    d = world.directory
    vendors = db.rows(d, "SELECT * FROM orgs WHERE kind = 'vendor'")
    people: dict[str, list[dict[str, Any]]] = {}
    for p in db.rows(d, "SELECT * FROM principals WHERE status = 'active'"):
        people.setdefault(p["org_id"], []).append(p)
    live_keys: dict[str, list[dict[str, Any]]] = {}
    for k in db.rows(
        d,
        "SELECT * FROM credentials WHERE revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > :now)",
        now=now,
    ):
        live_keys.setdefault(k["principal_id"], []).append(k)
    for org in vendors:
        nets = orjson.loads(org["networks"])
        ceiling = set(orjson.loads(org["ceiling_compartments"]))
        active = people.get(org["id"], [])
        if len(active) > org["seat_limit"]:
            found.append(f"{org['name']}: {len(active)} active > {org['seat_limit']} seats")
        for p in active:
            comps = set(orjson.loads(p["compartments"]))
            if p["clearance"] > org["ceiling_level"] or not comps <= ceiling:
                found.append(
                    f"{org['name']}: {p['name']} ({LEVELS[p['clearance']]}, {sorted(comps)})"
                    f" above the ceiling ({LEVELS[org['ceiling_level']]}, {sorted(ceiling)})"
                )
            for k in live_keys.get(p["id"], []):
                key_nets = orjson.loads(k["networks"])
                outside = [n for n in key_nets if not inside(n, nets)]
                if not key_nets or outside:
                    found.append(
                        f"{org['name']}: {p['name']}'s live key {k['id']} has networks "
                        f"{key_nets} outside the vendor's {nets}"
                    )
                if k["expires_at"] is None or k["expires_at"] > org["contract_end"]:
                    found.append(
                        f"{org['name']}: {p['name']}'s live key {k['id']} expires at "
                        f"{k['expires_at']}, after the contract end {org['contract_end']}"
                    )
    return found


# ── one example's vendor and its admins ────────────────────────────────────────────────────
def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


@dataclass(frozen=True)
class VendorStart:
    networks: tuple[str, ...]
    seats: int
    ceiling: str
    ceiling_compartments: tuple[str, ...]
    days: float


@dataclass
class Run:
    world: World
    vendor: str
    keys_of: dict[str, str]  # actor → admin key
    vm_id: str
    principals: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    added: int = 0
    log: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def issued(self, key: dict[str, Any]) -> None:
        """A key the API just showed: tracked, and the manager's own becomes theirs."""
        self.key_ids.append(key["id"])
        if key["principal_id"] == self.vm_id:
            self.keys_of["vm"] = key["key"]

    async def call(self, actor: str, method: str, path: str, body: Any = None) -> Any:
        status, answer = await admin_call(self.world, self.keys_of[actor], method, path, body)
        self.log.append(f"{actor} {method} {path} {body} -> {status}")
        self.statuses.append(status)
        assert status < 500, (status, answer, self.log)
        return status, answer


async def start(world: World, spec: VendorStart) -> Run:
    """A fresh vendor: its sponsor (internal vendor-manager), its own manager ``vm``."""
    n = next(_serial)
    sec = world.admin_key
    vendor, sponsor, manager = f"pv{n}", f"pv{n}-sponsor", f"pv{n}-vm"

    root = str(world.root)
    if root not in _approvers:
        _approvers[root] = make_admin(world, "second-security-admin", ["security-admin"])
        await world.reload()

    async def ok(method: str, path: str, body: Any, key: str = sec) -> Any:
        status, answer = await admin_call(world, key, method, path, body)
        if status == 202:  # a two-person change (a principal with a role): the second approves
            change = answer["pending"]["id"]
            status, answer = await admin_call(
                world, _approvers[root], "POST", f"/changes/{change}/approve"
            )
            answer = {"id": answer["result"]} if status == 200 else answer
        assert status in (200, 201), (method, path, body, status, answer)
        return answer

    await ok(
        "POST",
        "/principals",
        {"name": sponsor, "org": "internal", "clearance": "public", "roles": ["vendor-manager"]},
    )
    lift_enroll_limits(world)
    status, issued = await invite_and_enroll(world, sec, sponsor)
    assert status == 201, issued
    sponsor_key = issued["key"]
    await ok(
        "POST",
        "/vendors",
        {
            "name": vendor,
            "sponsor": sponsor,
            "contract_end": iso(time.time() + spec.days * DAY),
            "networks": ["127.0.0.0/8", *spec.networks],
            "seat_limit": spec.seats,
            "ceiling": spec.ceiling,
            "ceiling_compartments": list(spec.ceiling_compartments),
        },
    )
    await ok("POST", f"/vendors/{vendor}/status", {"status": "active"})
    vm_id = (
        await ok(
            "POST",
            "/principals",
            {"name": manager, "org": vendor, "clearance": "public", "roles": ["vendor-manager"]},
        )
    )["id"]
    status, vm = await invite_and_enroll(world, sec, manager, networks=["127.0.0.1/32"])
    assert status == 201, vm
    keys_of = {"sec": sec, "sec2": _approvers[root], "sponsor": sponsor_key, "vm": vm["key"]}
    run = Run(world, vendor, keys_of, vm_id)
    run.principals.append(manager)
    run.key_ids.append(vm["id"])
    return run


async def step(run: Run, op: tuple[Any, ...]) -> None:
    kind, actor = op[0], op[1]
    if kind == "vendor":
        body = dict(op[2])
        if "contract_end" in body:
            body["contract_end"] = iso(time.time() + body["contract_end"] * DAY)
        await run.call(actor, "PATCH", f"/vendors/{run.vendor}", body)
    elif kind == "status":
        await run.call(actor, "POST", f"/vendors/{run.vendor}/status", {"status": op[2]})
    elif kind == "add":
        _, _, body = op
        run.added += 1
        name = f"{run.vendor}-p{run.added}"
        status, _ = await run.call(
            actor, "POST", "/principals", {"name": name, "org": run.vendor, **body}
        )
        if status == 201:
            run.principals.append(name)
    elif kind == "update":
        _, _, index, body = op
        name = run.principals[index % len(run.principals)]
        await run.call(actor, "PATCH", f"/principals/{name}", body)
    elif kind == "key":
        _, _, index, nets, lifetime = op
        body = {"principal": run.principals[index % len(run.principals)], "networks": nets}
        if lifetime is not None:
            body["expires_in_s"] = lifetime
        status, answer = await run.call(actor, "POST", "/keys", body)
        if status == 403 and answer["error"]["rule"] == "own-credential":
            # A person's key is theirs to make: the actor invites, the person enrolls (the
            # same vendor terms bound it).
            status, answer = await invite_and_enroll(
                run.world,
                run.keys_of[actor],
                body["principal"],
                networks=nets,
                expires_in_s=lifetime,
            )
            run.log.append(f"{actor} invite+enroll {body['principal']} -> {status}")
            run.statuses[-1] = status  # the refusal was the rule; the enrollment is the op
            assert status < 500, (status, answer, run.log)
        if status == 201:
            run.issued(answer)
    elif kind == "rotate":
        _, _, index, grace = op
        key_id = run.key_ids[index % len(run.key_ids)]
        status, answer = await run.call(
            actor, "POST", f"/keys/{key_id}/rotate", {"grace_s": grace, "reason": "property"}
        )
        if status == 201:
            run.issued(answer)
    elif kind == "revoke":
        _, _, index = op
        key_id = run.key_ids[index % len(run.key_ids)]
        await run.call(actor, "POST", f"/keys/{key_id}/revoke", {"reason": "property"})
    elif kind == "rotate-vendor":
        status, answer = await run.call(
            actor, "POST", f"/vendors/{run.vendor}/rotate-keys", {"reason": "property"}
        )
        if status == 201:
            for key in answer["issued"]:
                if "key" in key:  # people get enrollment codes, service accounts keys
                    run.issued(key)
    elif kind == "approve":
        _, _, index = op
        status, pending = await run.call("sec2", "GET", "/changes")
        assert status == 200, pending
        if pending:
            change = pending[index % len(pending)]
            await run.call("sec2", "POST", f"/changes/{change['id']}/approve")
    else:  # pragma: no cover - the strategies make only the kinds above
        raise AssertionError(kind)


async def play(world: World, spec: VendorStart, ops: list[tuple[Any, ...]]) -> Run:
    run = await start(world, spec)
    assert violations(world) == [], run.log
    for op in ops:
        await step(run, op)
        found = violations(world)
        assert found == [], (found, run.log)
    return run


# ── strategies ─────────────────────────────────────────────────────────────────────────────
actors = st.sampled_from(ACTORS)
levels = st.sampled_from(LEVELS)
low_levels = st.sampled_from(["public", "public", "internal", *LEVELS])
compartment_lists = st.lists(st.sampled_from(COMPARTMENTS), max_size=2, unique=True)
index = st.integers(min_value=0, max_value=7)

vendor_starts = st.builds(
    VendorStart,
    networks=st.lists(st.sampled_from(VENDOR_NETWORK_POOL[2:]), max_size=2, unique=True).map(tuple),
    seats=st.integers(min_value=2, max_value=4),
    ceiling=levels,
    ceiling_compartments=compartment_lists.map(tuple),
    days=st.floats(min_value=5, max_value=80),
)
vendor_fields = {
    "networks": st.lists(st.sampled_from(VENDOR_NETWORK_POOL), min_size=1, max_size=3, unique=True),
    "ceiling": levels,
    "ceiling_compartments": compartment_lists,
    # Days from now (made an ISO time when played).
    "contract_end": st.sampled_from([1.0, 3.0, 20.0, 60.0, 120.0]),
    "seat_limit": st.integers(min_value=1, max_value=5),
}
# Mostly one term at a time (one refused term refuses the whole update), sometimes several.
vendor_bodies = st.one_of(
    *(st.fixed_dictionaries({name: value}) for name, value in vendor_fields.items()),
    st.fixed_dictionaries({}, optional=vendor_fields).filter(bool),
)
add_bodies = st.fixed_dictionaries(
    {"clearance": low_levels, "compartments": compartment_lists},
    optional={
        "kind": st.sampled_from(["human", "service"]),
        "roles": st.sampled_from([[], ["vendor-manager"]]),
    },
)
update_bodies = st.one_of(
    st.fixed_dictionaries({"status": st.sampled_from(["active", "disabled"])}),
    st.fixed_dictionaries(
        {},
        optional={
            "clearance": levels,
            "compartments": compartment_lists,
            "roles": st.sampled_from([[], ["vendor-manager"]]),
            "status": st.sampled_from(["active", "disabled"]),
        },
    ),
)
key_networks: st.SearchStrategy[list[str]] = st.one_of(
    st.just([]),
    st.lists(st.sampled_from(KEY_NETWORK_POOL), min_size=1, max_size=2, unique=True),
)
status_changes = st.fixed_dictionaries({"status": st.sampled_from(["active", "disabled"])})
ops = st.one_of(
    st.tuples(st.just("vendor"), st.sampled_from(["sec", "sec", "vm"]), vendor_bodies),
    st.tuples(st.just("vendor"), st.just("sec"), vendor_bodies),
    st.tuples(st.just("update"), st.sampled_from(["sec", "sponsor"]), index, status_changes),
    st.tuples(st.just("status"), actors, st.sampled_from(["suspended", "active"])),
    st.tuples(st.just("add"), actors, add_bodies),
    st.tuples(st.just("update"), actors, index, update_bodies),
    st.tuples(st.just("update"), actors, index, update_bodies),
    st.tuples(st.just("key"), actors, index, key_networks, st.sampled_from(LIFETIMES)),
    st.tuples(st.just("key"), actors, index, key_networks, st.sampled_from(LIFETIMES)),
    st.tuples(st.just("rotate"), actors, index, st.sampled_from(GRACES)),
    st.tuples(st.just("revoke"), actors, index),
    st.tuples(st.just("rotate-vendor"), actors),
    st.tuples(st.just("approve"), st.just("sec2"), index),
    st.tuples(st.just("approve"), st.just("sec2"), index),
)


@settings(
    max_examples=40,
    deadline=None,
    # Shrinking replays whole sequences against the live gateway; the failing sequence is
    # printed as found (with the log of every call in the assertion message).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(spec=vendor_starts, sequence=st.lists(ops, min_size=4, max_size=14))
async def test_no_sequence_of_admin_calls_breaks_a_vendors_terms(
    world: World, spec: VendorStart, sequence: list[tuple[Any, ...]]
) -> None:
    await play(world, spec, sequence)


# Terms against the people lifecycle: only the security-admin's vendor-term changes, enabling
# and disabling, new people and keys (a narrower space, so the interleavings are reached).
narrowing = st.one_of(
    st.fixed_dictionaries({"contract_end": vendor_fields["contract_end"]}),
    st.fixed_dictionaries({"networks": vendor_fields["networks"]}),
    st.fixed_dictionaries({"ceiling": levels}),
)
lifecycle_ops = st.one_of(
    st.tuples(st.just("vendor"), st.just("sec"), narrowing),
    st.tuples(st.just("update"), st.sampled_from(ACTORS), st.integers(0, 1), status_changes),
    st.tuples(st.just("update"), st.sampled_from(ACTORS), st.integers(0, 1), status_changes),
    st.tuples(st.just("add"), st.sampled_from(ACTORS), add_bodies),
    st.tuples(st.just("key"), actors, st.integers(0, 1), key_networks, st.sampled_from(LIFETIMES)),
    st.tuples(st.just("update"), st.just("sec"), st.integers(0, 1), update_bodies),
    st.tuples(st.just("approve"), st.just("sec2"), index),
)


@settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(spec=vendor_starts, sequence=st.lists(lifecycle_ops, min_size=3, max_size=10))
async def test_no_interleaving_of_terms_and_enabling_breaks_a_vendors_terms(
    world: World, spec: VendorStart, sequence: list[tuple[Any, ...]]
) -> None:
    await play(world, spec, sequence)


# ── the sequences found, kept as plain tests ───────────────────────────────────────────────
PLAIN = VendorStart(
    networks=("10.1.0.0/16",), seats=3, ceiling="internal", ceiling_compartments=(), days=30.0
)


async def test_re_enabled_manager_keeps_a_key_past_a_shortened_contract(world: World) -> None:
    """Disable the vendor's manager, shorten the contract (only active principals' keys are
    clipped), enable the manager again: its key is live and outlives the contract."""
    await play(
        world,
        PLAIN,
        [
            ("update", "sec", 0, {"status": "disabled"}),
            ("vendor", "sec", {"contract_end": 3.0}),
            ("update", "sec", 0, {"status": "active"}),
        ],
    )


async def test_re_enabled_principal_keeps_a_key_outside_narrowed_networks(
    world: World,
) -> None:
    """A key with the vendor's networks, its owner disabled, the networks narrowed (only
    active principals' keys are in the way), the owner enabled again: the live key reaches
    a network the vendor no longer has."""
    await play(
        world,
        PLAIN,
        [
            ("add", "sponsor", {"clearance": "public", "compartments": []}),
            ("key", "vm", 1, ["10.1.2.0/24"], 3600.0),
            ("update", "vm", 1, {"status": "disabled"}),
            ("vendor", "sec", {"networks": ["127.0.0.0/8"]}),
            ("update", "vm", 1, {"status": "active"}),
        ],
    )


async def test_the_same_changes_in_a_safe_order_are_accepted(world: World) -> None:
    """The control: revoking the key before the narrowing, and enabling after it, keeps the
    terms (and every call is accepted)."""
    run = await play(
        world,
        PLAIN,
        [
            ("add", "sponsor", {"clearance": "public", "compartments": []}),
            ("key", "vm", 1, ["10.1.2.0/24"], 3600.0),
            ("update", "vm", 1, {"status": "disabled"}),
            ("revoke", "vm", 1),
            ("vendor", "sec", {"networks": ["127.0.0.0/8"], "contract_end": 3.0}),
            ("update", "vm", 1, {"status": "active"}),
        ],
    )
    assert all(200 <= status < 300 for status in run.statuses), run.log


@pytest.mark.parametrize("level", [lvl for lvl in LEVELS if lvl != "public"])
async def test_nobody_raises_a_vendor_principal_above_the_ceiling(world: World, level: str) -> None:
    """Not a vendor-manager adding or changing someone, nor two security-admins together."""
    run = await start(
        world,
        VendorStart(networks=(), seats=3, ceiling="public", ceiling_compartments=(), days=30.0),
    )
    manager = run.principals[0]
    new = {"name": f"{run.vendor}-x", "org": run.vendor, "clearance": level}
    assert (await run.call("vm", "POST", "/principals", new))[0] == 400
    assert (await run.call("sec", "POST", "/principals", new))[0] == 400
    raise_it = {"clearance": level}
    assert (await run.call("vm", "PATCH", f"/principals/{manager}", raise_it))[0] == 403
    # A raise above the ceiling is refused when proposed (every rule is checked up front).
    status, answer = await run.call("sec", "PATCH", f"/principals/{manager}", raise_it)
    assert status == 400 and "rule vendor-ceiling" in answer["error"]["message"], answer
    assert violations(world) == []


async def test_an_approved_raise_meets_the_ceiling_of_the_day_it_is_applied(world: World) -> None:
    """A raise proposed within the ceiling, the ceiling lowered meanwhile (the principal is
    disabled then, so nothing is in the way), the raise approved: refused."""
    run = await start(
        world,
        VendorStart(networks=(), seats=3, ceiling="restricted", ceiling_compartments=(), days=30.0),
    )
    manager = run.principals[0]
    status, proposal = await run.call(
        "sec", "PATCH", f"/principals/{manager}", {"clearance": "restricted"}
    )
    assert status == 202, proposal
    assert (await run.call("sec", "PATCH", f"/principals/{manager}", {"status": "disabled"}))[
        0
    ] == 200
    assert (await run.call("sec", "PATCH", f"/vendors/{run.vendor}", {"ceiling": "public"}))[
        0
    ] == 200
    status, answer = await run.call("sec2", "POST", f"/changes/{proposal['pending']['id']}/approve")
    assert status == 400 and "rule vendor-ceiling" in answer["error"]["message"], answer
    assert violations(world) == []
