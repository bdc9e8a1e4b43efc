"""Golden records of the events a running process writes itself (not through the
directory): the gateway started and stopped, admin calls refused and read, an enrollment
refused at the door, a sign-in refused. ``golden_process_payloads.json`` was captured from
the dictionaries those producers built by hand, before they built payloads; a world is
driven through its HTTP API and every such record must be its golden ``data`` bytes (the
listener's port, which differs per run, is written as 0).

Regenerate (only when a record is meant to change, with a new encoding version):
``GARRISON_WRITE_GOLDEN=1 pytest tests/audit/test_payload_golden_process.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import orjson
from aiohttp.test_utils import make_mocked_request

from garrison.admin.dispatch import record_failure
from garrison.audit import AuditEvent
from garrison.audit.payloads import Untyped, payload_of
from garrison.identity.oidc_config import OidcProvider, OidcSettings
from tests.support.admin import admin_call
from tests.support.world import start_world, stop_world

GOLDEN = Path(__file__).with_name("golden_process_payloads.json")
NAMES = (
    "gateway.started",
    "gateway.stopped",
    "admin.denied",
    "admin.read",
    "enrollment.refused",
    "session.refused",
)
# A key id that no credential has (refused: its id is named in the record).
UNKNOWN_KEY = "gk_0123456789abcdef_" + "A" * 43
# A provider whose keys are never fetched: the refused exchange stops before.
OIDC = OidcSettings((OidcProvider(issuer="https://idp.invalid", client_id="garrison"),))


async def _scenario(tmp_path: Path) -> list[tuple[str, bytes]]:
    world = await start_world(tmp_path, detect=False, oidc=OIDC)
    try:
        await admin_call(world, None, "GET", "/principals")
        await admin_call(world, UNKNOWN_KEY, "GET", "/principals")
        await admin_call(world, world.admin_key, "GET", "/principals", params={"org": "internal"})
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{world.base}/admin/v1/enroll", data=b"{") as resp:
                await resp.read()
            async with session.post(f"{world.base}/auth/v1/token", data=b"{}") as resp:
                await resp.read()
        await world.settle()
    finally:
        await stop_world(world)
    written = []
    for record in world.events():
        if record["name"] not in NAMES:
            continue
        data = record["data"]
        if record["name"] == "gateway.started":
            data["port"] = 0  # the listener's, per run (keeps its place in the order)
        written.append((record["name"], orjson.dumps(data)))
    return written


async def test_every_record_a_process_writes_is_its_golden_bytes(tmp_path: Path) -> None:
    written = await _scenario(tmp_path)
    if os.environ.get("GARRISON_WRITE_GOLDEN"):
        GOLDEN.write_bytes(
            orjson.dumps([(n, d.decode()) for n, d in written], option=orjson.OPT_INDENT_2) + b"\n"
        )
    golden = [(name, data.encode()) for name, data in orjson.loads(GOLDEN.read_bytes())]
    assert written == golden
    assert {name for name, _ in golden} == set(NAMES)
    for name, data in golden:
        payload = payload_of(name, orjson.loads(data))
        assert not isinstance(payload, Untyped)
        assert orjson.dumps(payload.as_data()) == data


def test_an_admin_failure_writes_the_bytes_its_dictionary_wrote() -> None:
    """``admin.failed`` (a failure on Garrison's side, rare: not driven through HTTP here):
    golden, the order ``dispatch.record_failure`` wrote by hand."""
    events: list[AuditEvent] = []
    state = SimpleNamespace(
        audit=SimpleNamespace(append_later=events.append), clock=lambda: 1_800_000_000.0
    )
    request = make_mocked_request("POST", "/admin/v1/principals?dry_run=1")
    record_failure(state, request, "prn_1", "gk_1", "req_1", RuntimeError("boom"))
    (event,) = events
    golden = (
        b'{"method":"POST","path":"/admin/v1/principals","query":{"dry_run":"1"},'
        b'"status":500,"error":"internal_error"}'
    )
    assert orjson.dumps(event.data) == golden
    assert event.payload is not None and orjson.dumps(event.payload.as_data()) == golden
    assert orjson.dumps(payload_of("admin.failed", orjson.loads(golden)).as_data()) == golden
