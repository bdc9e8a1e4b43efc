"""The admin API's surface: what a stranger can read, bounded dates, honest 405s, a record of
failed calls, and a document that says what the server does."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from garrison.admin import schemas
from garrison.admin.api import ROUTES
from garrison.admin_wire import ADMIN_PREFIX
from garrison.respond import render
from garrison.store.directory import NAME_MAX_CHARS
from tests.support.admin import admin_call
from tests.support.world import World

pytestmark = pytest.mark.e2e


async def _doc(world: World) -> dict[str, object]:
    status, doc = await admin_call(world, world.admin_key, "GET", "/openapi.json")
    assert status == 200
    return dict(doc)


async def test_readyz_says_only_ready_or_not(world: World) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{world.base}/readyz") as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == {"status": "ready"}


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC: once a 500 on every report
        "1999-12-31T23:59:59Z",
        "9999-12-31T23:59:59Z",
        "1970-01-01T00:00:00",
    ],
)
async def test_incident_dates_out_of_bounds_are_refused(world: World, since: str) -> None:
    status, body = await admin_call(
        world, world.admin_key, "POST", "/incidents", {"title": "t", "since": since}
    )
    assert status == 400, body
    assert body["error"]["message"].startswith("since: ")
    assert "2000-01-01" in body["error"]["message"]


async def test_dates_at_the_bounds_are_accepted_and_every_report_renders(world: World) -> None:
    status, body = await admin_call(
        world, world.admin_key, "POST", "/incidents", {"title": "t", "since": "2000-01-01T00:00Z"}
    )
    assert status == 201, body
    for fmt in ("json", "md", "html"):
        status, report = await admin_call(
            world,
            world.admin_key,
            "GET",
            f"/incidents/{body['id']}/report",
            params={"format": fmt},
        )
        assert status == 200, report


@pytest.mark.parametrize("field", ["contract_end", "contract_start", "security_review_at"])
async def test_every_vendor_date_is_bounded(world: World, field: str) -> None:
    vendor = {
        "name": "acme",
        "sponsor": "admin",
        "contract_end": "2099-01-01T00:00:00Z",
        "networks": ["10.0.0.0/8"],
        "seat_limit": 3,
        field: "1900-01-01T00:00:00Z",
    }
    status, body = await admin_call(world, world.admin_key, "POST", "/vendors", vendor)
    assert status == 400, body
    assert body["error"]["message"].startswith(f"{field}: ")


def test_the_bounds_are_named() -> None:
    assert schemas.MOMENT_MIN.year == 2000
    assert schemas.MOMENT_MAX.year == 9999


async def test_a_failed_report_read_leaves_a_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, body = await admin_call(world, world.admin_key, "POST", "/incidents", {"title": "t"})
    assert status == 201

    def broken(report: object) -> str:
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(render, "to_markdown", broken)
    path = f"/incidents/{body['id']}/report"
    status, answer = await admin_call(world, world.admin_key, "GET", path, params={"format": "md"})
    assert status == 500
    assert "renderer broke" not in orjson.dumps(answer).decode()
    await world.settle()
    failed = world.events("admin.failed")
    assert len(failed) == 1
    assert failed[0]["data"]["path"] == ADMIN_PREFIX + path
    assert failed[0]["data"]["status"] == 500
    assert failed[0]["data"]["query"] == {"format": "md"}


async def test_a_405_names_the_methods_allowed(world: World) -> None:
    headers = {"authorization": f"Bearer {world.admin_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.delete(f"{world.base}{ADMIN_PREFIX}/orgs", headers=headers) as resp,
    ):
        assert resp.status == 405
        assert set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


async def test_the_document_lists_proposals_and_conflicts(world: World) -> None:
    doc = await _doc(world)
    paths = doc["paths"]
    assert isinstance(paths, dict)
    for path, method in (
        ("/principals", "post"),
        ("/principals/{ref}", "patch"),
        ("/models/{ref}", "patch"),
        ("/policy", "post"),
    ):
        assert "202" in paths[ADMIN_PREFIX + path][method]["responses"], path
    for path in ("/changes/{change_id}/approve", "/changes/{change_id}/deny"):
        assert "409" in paths[ADMIN_PREFIX + path]["post"]["responses"], path
    for route in ROUTES:
        op = paths[ADMIN_PREFIX + route.path][route.method.lower()]
        success = op["responses"][str(route.status)]["content"]["application/json"]["schema"]
        assert success, f"{route.method} {route.path} has no success schema"


async def test_the_document_types_query_parameters(world: World) -> None:
    doc = await _doc(world)
    paths = doc["paths"]
    assert isinstance(paths, dict)

    def param(path: str, name: str) -> dict[str, object]:
        op = paths[ADMIN_PREFIX + path]["get"]
        return next(p["schema"] for p in op["parameters"] if p["name"] == name)

    assert param("/vendors/{ref}", "dormant_days")["type"] == "integer"
    assert param("/principals", "kind") == {"enum": ["human", "service"]}
    assert param("/locks", "all") == {"type": "boolean"}
    assert param("/incidents/{incident_id}/report", "format") == {"enum": ["json", "md", "html"]}
    assert param("/alerts", "after") == {"type": "number"}


async def test_a_flag_that_is_neither_true_nor_false_is_refused(world: World) -> None:
    status, body = await admin_call(world, world.admin_key, "GET", "/locks", params={"all": "x"})
    assert status == 400, body
    status, _ = await admin_call(world, world.admin_key, "GET", "/locks", params={"all": "true"})
    assert status == 200


async def test_the_rotation_reason_limit_is_the_servers(world: World) -> None:
    doc = await _doc(world)
    components = doc["components"]
    assert isinstance(components, dict)
    reason = components["schemas"]["KeyRotate"]["properties"]["reason"]
    assert reason["maxLength"] == NAME_MAX_CHARS
    key = world.keys["alice"].split("_")[1]
    too_long = {"reason": "r" * (NAME_MAX_CHARS + 1)}
    status, body = await admin_call(world, world.admin_key, "POST", f"/keys/{key}/rotate", too_long)
    assert status == 400, body
    assert body["error"]["message"].startswith("reason: ")
