"""Adding a model takes two admins when it is at restricted or above, or when its upstream is
the server of a model at a higher level or with compartments; changing ``auth_style`` takes
two admins too. The upstream credential waits sealed inside the proposal: never in the
clear in the proposal row, the change list or the audit log."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from garrison.domain import AuthStyle, Level
from garrison.keyring import Sealer, add_seal_key
from garrison.mock import MockConfig, MockUpstream
from garrison.store import model_origin
from garrison.store.model_origin import Registered, creation_needs_two, origin_of
from tests.support import db
from tests.support.admin import Admins, admin_call, make_admin
from tests.support.world import UPSTREAM_KEY, World

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hello"}]


def mock_port(world: World) -> int:
    assert world.mock.port is not None
    return world.mock.port


def rows(world: World, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` as tuples (on either database)."""
    return [tuple(r.values()) for r in db.rows(world.directory, sql)]


async def chat(world: World, key: str, model: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            data=orjson.dumps({"model": model, "messages": USER}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as resp,
    ):
        await resp.read()
        return resp.status


def never_shown(world: World, secret: str) -> None:
    """The credential is nowhere in the clear: proposals, audit log, whole database file."""
    for (payload,) in rows(world, "SELECT payload FROM pending_changes"):
        assert secret not in payload
    assert secret.encode() not in world.raw_audit()
    # Everything the database holds (SQLite's files; every row on PostgreSQL).
    assert secret.encode() not in db.stored_bytes(world.directory)


def alias_body(world: World, **more: Any) -> dict[str, Any]:
    return {
        # localhost: the seeded restricted cyber-model's server (127.0.0.1), spelled anew.
        "name": "public-alias",
        "upstream_url": f"http://LocalHost:{mock_port(world)}/v1",
        "upstream_model": "mock-large",
        "upstream_key": UPSTREAM_KEY,
        "level": "public",
        **more,
    }


async def test_a_public_alias_of_a_protected_upstream_is_a_proposal_not_a_model(
    world: World,
) -> None:
    models_before = rows(world, "SELECT count(*) FROM models")
    status, body = await admin_call(world, world.admin_key, "POST", "/models", alias_body(world))
    assert status == 202, body
    pending = body["pending"]
    assert pending["kind"] == "model-create"
    assert pending["id"].startswith("chg_")
    assert "is the server of model" in pending["summary"]
    assert rows(world, "SELECT count(*) FROM models") == models_before
    assert await chat(world, world.keys["carol"], "public-alias") == 404
    # The credential is in the proposal, sealed with the deployment's seal key.
    (payload,) = [
        r for r in rows(world, "SELECT payload, id FROM pending_changes") if r[1] == pending["id"]
    ]
    sealed = orjson.loads(payload[0])["upstream_key_sealed"]
    sealer = Sealer.from_dir(world.settings.key_dir)
    assert sealer.unseal(sealed.encode()).reveal() == UPSTREAM_KEY
    status, listed = await admin_call(world, world.admin_key, "GET", "/changes")
    assert status == 200 and UPSTREAM_KEY not in orjson.dumps(listed).decode()
    await world.settle()
    never_shown(world, UPSTREAM_KEY)


async def test_a_second_admin_approves_and_the_model_serves_with_its_credential(
    world: World,
) -> None:
    second = make_admin(world, "sec-2", ["security-admin"])
    await world.reload()
    status, body = await admin_call(world, world.admin_key, "POST", "/models", alias_body(world))
    assert status == 202
    change_id = body["pending"]["id"]
    # Not the proposer.
    status, refused = await admin_call(
        world, world.admin_key, "POST", f"/changes/{change_id}/approve", {}
    )
    assert status == 403, refused
    status, approved = await admin_call(world, second, "POST", f"/changes/{change_id}/approve", {})
    assert status == 200, approved
    assert approved["result"]["name"] == "public-alias"
    status, shown = await admin_call(world, world.admin_key, "GET", "/models/public-alias")
    assert shown["upstream_key"] == "sealed" and shown["level"] == "public"
    # The mock upstream refuses any other credential: a 200 means the sealed one arrived.
    assert await chat(world, world.keys["carol"], "public-alias") == 200
    await world.settle()
    never_shown(world, UPSTREAM_KEY)


async def test_a_public_alias_of_a_critical_model_is_a_proposal(world: World) -> None:
    second = make_admin(world, "sec-2", ["security-admin"])
    await world.reload()
    # A critical model on a server of its own (two admins), then one admin's public alias.
    critical = {"name": "oracle", "upstream_url": "http://127.0.0.1:9/v1", "level": "critical"}
    critical |= {"upstream_key": UPSTREAM_KEY}
    status, body = await admin_call(world, world.admin_key, "POST", "/models", critical)
    assert status == 202, body
    status, body = await admin_call(
        world, second, "POST", f"/changes/{body['pending']['id']}/approve", {}
    )
    assert status == 200, body
    alias = {"name": "free-oracle", "upstream_url": "http://localhost:9/v1", "level": "public"}
    alias |= {"upstream_key": UPSTREAM_KEY}
    status, body = await admin_call(world, world.admin_key, "POST", "/models", alias)
    assert status == 202, body
    assert "'oracle' (critical)" in body["pending"]["summary"]
    status, _ = await admin_call(world, world.admin_key, "GET", "/models/free-oracle")
    assert status == 404
    await world.settle()
    never_shown(world, UPSTREAM_KEY)


async def test_restricted_and_critical_models_take_two_admins_anywhere(world: World) -> None:
    for level in ("restricted", "critical"):
        status, body = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/models",
            {"name": f"new-{level}", "upstream_url": "http://127.0.0.1:9/v1", "level": level},
        )
        assert status == 202, body


async def test_a_model_on_its_own_server_is_added_at_once(world: World) -> None:
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/models",
        {"name": "standalone", "upstream_url": "http://127.0.0.1:9/v1", "level": "internal"},
    )
    assert status == 201, body
    # At the same level as what is already there (no compartments), still one admin.
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/models",
        {"name": "standalone-2", "upstream_url": "http://127.0.0.1:9/v2", "level": "internal"},
    )
    assert status == 201, body


async def test_changing_auth_style_takes_two_admins(world: World) -> None:
    status, body = await admin_call(
        world, world.admin_key, "PATCH", "/models/assistant", {"auth_style": "x-api-key"}
    )
    assert status == 202, body
    status, shown = await admin_call(world, world.admin_key, "GET", "/models/assistant")
    assert shown["auth_style"] == "bearer"


async def test_invalid_model_is_refused_before_any_proposal(world: World) -> None:
    before = rows(world, "SELECT count(*) FROM pending_changes")
    status, body = await admin_call(
        world, world.admin_key, "POST", "/models", alias_body(world, name="assistant")
    )
    assert status == 409, body
    assert rows(world, "SELECT count(*) FROM pending_changes") == before


async def test_rotating_the_seal_key_reseals_waiting_proposals(world: World) -> None:
    status, _ = await admin_call(world, world.admin_key, "POST", "/models", alias_body(world))
    assert status == 202
    key_dir = world.settings.key_dir
    old = Sealer.from_dir(key_dir)
    add_seal_key(key_dir)
    new = Sealer.from_dir(key_dir)
    assert world.directory.reseal_upstream_keys(new, now=time.time()) >= 1
    (payload,) = rows(world, "SELECT payload FROM pending_changes WHERE status = 'pending'")
    sealed = orjson.loads(payload[0])["upstream_key_sealed"].encode()
    newest_only = Sealer([(Path(key_dir) / "seal.keys").read_text().split()[0]])
    assert newest_only.unseal(sealed).reveal() == UPSTREAM_KEY
    assert old is not None


# ── the origin rule, pure (a resolver passed in) ────────────────────────────────────────
def fake(table: dict[str, frozenset[str] | None]) -> model_origin.Resolver:
    return lambda host: table.get(host)


CRITICAL = Registered("oracle", "https://models.internal:8443/v1", Level.CRITICAL, frozenset())
NAMES = fake(
    {
        "models.internal": frozenset({"10.0.0.5"}),
        "alias.example": frozenset({"10.0.0.5", "10.0.0.6"}),
        "elsewhere.example": frozenset({"10.0.0.7"}),
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "https://models.internal:8443/other",
        "https://MODELS.INTERNAL.:8443/v1",
        "https://10.0.0.5:8443/v1",
        "https://[::ffff:10.0.0.5]:8443/v1",
        "https://alias.example:8443/v1",
    ],
)
def test_spellings_of_the_same_server_share_its_origin(url: str) -> None:
    assert creation_needs_two(url, Level.PUBLIC, [CRITICAL], NAMES) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://models.internal:9443/v1",  # another port
        "http://models.internal:8443/v1",  # another scheme
        "https://elsewhere.example:8443/v1",  # another address
    ],
)
def test_other_servers_do_not_share_it(url: str) -> None:
    assert creation_needs_two(url, Level.PUBLIC, [CRITICAL], NAMES) is None


def test_default_ports_are_filled_in() -> None:
    assert origin_of("https://10.0.0.5/v1").port == 443
    assert origin_of("http://10.0.0.5/v1").port == 80
    critical = Registered("c", "https://10.0.0.5/v1", Level.CRITICAL, frozenset())
    assert creation_needs_two("https://10.0.0.5:443/x", Level.PUBLIC, [critical], NAMES)


def test_a_host_that_does_not_resolve_takes_two_admins() -> None:
    assert creation_needs_two("https://nowhere.example/v1", Level.PUBLIC, [], NAMES) is not None


def test_compartments_alone_make_an_origin_protected() -> None:
    comp = Registered("c", "https://10.0.0.5/v1", Level.INTERNAL, frozenset({"cyber"}))
    assert creation_needs_two("https://10.0.0.5/x", Level.INTERNAL, [comp], NAMES) is not None
    plain = Registered("p", "https://10.0.0.5/v1", Level.INTERNAL, frozenset())
    assert creation_needs_two("https://10.0.0.5/x", Level.INTERNAL, [plain], NAMES) is None


def test_a_slow_resolver_counts_as_unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*_: Any, **__: Any) -> Any:
        time.sleep(0.5)
        return []

    monkeypatch.setattr(model_origin, "RESOLVE_TIMEOUT_S", 0.05)
    monkeypatch.setattr(socket, "getaddrinfo", slow)
    assert model_origin.system_resolver("slow.example") is None


def test_addresses_per_host_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    many = [(2, 1, 6, "", (f"10.1.{i // 256}.{i % 256}", 0)) for i in range(300)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: many)
    found = model_origin.system_resolver("cdn.example")
    assert found is not None and len(found) == model_origin.ADDRESSES_PER_HOST_MAX


def test_a_protected_model_whose_host_does_not_resolve_makes_adding_two_person() -> None:
    lost = Registered("lost", "https://gone.example/v1", Level.CRITICAL, frozenset())
    why = creation_needs_two("https://10.0.0.9/v1", Level.PUBLIC, [lost], NAMES)
    assert why is not None and "'lost'" in why


def test_lookups_run_at_once_within_one_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(host: str) -> frozenset[str]:
        time.sleep(0.2)
        return frozenset({"10.9.9.9"})

    monkeypatch.setattr(model_origin, "RESOLVE_TIMEOUT_S", 1.0)
    started = time.monotonic()
    found = model_origin.resolve_all([f"h{i}.example" for i in range(8)], slow)
    assert time.monotonic() - started < 1.0
    assert all(v == frozenset({"10.9.9.9"}) for v in found.values())
    # At most RESOLVE_PARALLEL_MAX at once: with one worker, lookups past the timeout are None.
    monkeypatch.setattr(model_origin, "RESOLVE_PARALLEL_MAX", 1)
    monkeypatch.setattr(model_origin, "RESOLVE_TIMEOUT_S", 0.3)
    found = model_origin.resolve_all(["a.example", "b.example", "c.example"], slow)
    assert sum(v is None for v in found.values()) >= 1


def count(world: World, table: str) -> int:
    """Rows in ``table`` (on either database)."""
    (found,) = db.rows(world.directory, f"SELECT count(*) AS n FROM {table}")  # noqa: S608
    return int(found["n"])


async def chat_answer(world: World, key: str, model: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": model, "messages": USER},
            headers={"authorization": f"Bearer {key}"},
        ) as resp,
    ):
        return resp.status, await resp.read()


# ── re-pointing a model takes two admins ───────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("field", "value"),
    [("upstream_model", "mock-large"), ("upstream_url", "/v2"), ("api", "anthropic")],
    ids=["upstream-model", "upstream-url", "api"],
)
async def test_re_pointing_a_model_waits_for_a_second_admin(
    admins: Admins, field: str, value: str
) -> None:
    w = admins.world
    if field == "upstream_url":  # the same host, another path
        value = f"http://127.0.0.1:{w.mock.port}{value}"
    before = admins.model("assistant")
    proposal = await admins.ok(admins.admin, "PATCH", "/models/assistant", {field: value}, 202)
    change_id = proposal["pending"]["id"]
    assert proposal["pending"]["kind"] == "model-update"
    assert proposal["pending"]["target"] == before.id
    assert admins.model("assistant") == before
    assert (await chat_answer(w, w.keys["carol"], "assistant"))[0] == 200  # still served as before
    await admins.refused(admins.admin, "POST", f"/changes/{change_id}/approve", {}, status=403)

    applied = await admins.ok(admins.sec_2, "POST", f"/changes/{change_id}/approve", {})
    assert applied["result"] == {field: [str(getattr(before, field)), value]}
    after = admins.model("assistant")
    assert str(getattr(after, field)) == value
    # The same host: the upstream key stays.
    assert after.upstream_key is not None and after.upstream_key.reveal() == UPSTREAM_KEY
    assert after.auth_style is AuthStyle.BEARER


async def test_a_credential_change_alone_applies_at_once(admins: Admins) -> None:
    w = admins.world
    pending_before = count(w, "pending_changes")
    answer = await admins.ok(
        admins.admin, "PATCH", "/models/assistant", {"upstream_key": "sk-rotated-0123456789"}
    )
    assert answer == {"changes": {"upstream_key": "replaced"}}
    answer = await admins.ok(admins.admin, "PATCH", "/models/assistant", {"level": "restricted"})
    assert answer == {"changes": {"level": ["internal", "restricted"]}}
    assert count(w, "pending_changes") == pending_before


async def test_a_re_pointing_cannot_carry_a_credential(admins: Admins) -> None:
    w = admins.world
    before = count(w, "pending_changes")
    error = await admins.refused(
        admins.admin,
        "PATCH",
        "/models/assistant",
        {"upstream_url": "http://127.0.0.2:9/v1", "upstream_key": "sk-new-0123456789"},
        status=400,
    )
    assert "separate call" in error["message"]
    assert count(w, "pending_changes") == before
    assert "sk-new-0123456789" not in repr(w.raw_audit())


async def test_an_approved_move_to_a_new_host_never_sends_it_the_old_key(admins: Admins) -> None:
    w = admins.world
    elsewhere = MockUpstream(MockConfig())
    port = await elsewhere.start("127.0.0.2", 0)
    try:
        url = f"http://127.0.0.2:{port}/v1"
        proposal = await admins.ok(
            admins.admin, "PATCH", "/models/assistant", {"upstream_url": url}, want=202
        )
        applied = await admins.ok(
            admins.sec_2, "POST", f"/changes/{proposal['pending']['id']}/approve", {}
        )
        assert applied["result"] == {
            "upstream_url": [f"http://127.0.0.1:{w.mock.port}/v1", url],
            "upstream_key": "removed (new host)",
            "auth_style": ["bearer", "none"],
        }
        model = admins.model("assistant")
        assert model.upstream_url == url
        assert model.upstream_key is None and model.auth_style is AuthStyle.NONE
        shown = await admins.ok(admins.admin, "GET", "/models/assistant")
        assert shown["upstream_url"] == url
        await w.settle()
        event = w.events("model.updated")[-1]
        assert event["data"]["changes"]["upstream_key"] == "removed (new host)"

        seen_before = len(w.mock.seen)
        status, _ = await chat_answer(w, w.keys["carol"], "assistant")
        assert status == 200
        (request,) = elsewhere.seen
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert "authorization" not in headers and "x-api-key" not in headers
        assert UPSTREAM_KEY not in repr(request.headers)
        assert len(w.mock.seen) == seen_before  # the old upstream saw nothing
    finally:
        await elsewhere.stop()
