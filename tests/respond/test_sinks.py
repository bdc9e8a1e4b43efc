"""Alert sinks: the webhook (HMAC-signed, timestamped, retried with backoff on 5xx and
transport errors, never on a 4xx refusal, giving up after ``WEBHOOK_ATTEMPTS``), the
JSON-lines file, syslog, a full queue counted as dropped — and a gateway whose webhook
receives the alert of a scripted attack."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web

from garrison.respond import sinks
from garrison.respond.sinks import JsonlSink, SyslogSink, WebhookSink
from garrison.server import Gateway
from tests.support.detection import chat_from
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

T = TypeVar("T")
WITHIN_S = 10.0
SECRET = b"whsec-test-0123456789"
ALERT: dict[str, Any] = {
    "id": "alr_test1",
    "rule_id": "key-multi-network",
    "title": "One key used from several networks",
    "severity": "high",
    "subject": {"kind": "credential", "id": "gk_abc"},
    "evidence": [3, 7],
    "actions": [],
}


async def eventually(
    probe: Callable[[], T | Awaitable[T]], what: str, within: float = WITHIN_S
) -> T:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.01)


def expected_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


# ── a receiver on loopback ─────────────────────────────────────────────────────────────────
@dataclass
class Hit:
    at: float  # monotonic
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    # Status to answer each request with, in order; once used up, 200.
    script: list[int] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(
            Hit(
                time.monotonic(),
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
            )
        )
        status = self.script.pop(0) if self.script else 200
        return web.Response(status=status, text="ok" if status < 300 else "no")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rx.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rx
    finally:
        await runner.cleanup()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(sinks, "WEBHOOK_BACKOFF_S", 0.05)
    return 0.05


async def finished(sink: Any) -> None:
    """Wait until the sink's one alert was delivered or given up on."""
    await eventually(lambda: sink.delivered + sink.dropped >= 1, "the sink finished the alert")


# ── the webhook ────────────────────────────────────────────────────────────────────────────
async def test_webhook_posts_the_alert_signed_and_timestamped(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, SECRET)
    try:
        before = int(time.time())
        sink.send(ALERT)
        await finished(sink)
    finally:
        sink.close()
    assert sink.delivered == 1 and sink.dropped == 0
    (hit,) = receiver.hits
    assert orjson.loads(hit.body) == ALERT
    assert hit.headers["content-type"] == "application/json"
    stamp = hit.headers[sinks.TIMESTAMP_HEADER]
    assert stamp.isdigit() and before <= int(stamp) <= int(time.time())
    assert hit.headers[sinks.SIGNATURE_HEADER] == expected_signature(SECRET, stamp, hit.body)
    assert sinks.sign(SECRET, stamp, hit.body) == expected_signature(SECRET, stamp, hit.body)
    # The signature binds the timestamp: replayed with another one it no longer checks out.
    assert hit.headers[sinks.SIGNATURE_HEADER] != expected_signature(
        SECRET, str(int(stamp) + 600), hit.body
    )
    assert SECRET not in hit.body


async def test_webhook_without_a_secret_is_timestamped_but_unsigned(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, None)
    try:
        sink.send(ALERT)
        await finished(sink)
    finally:
        sink.close()
    (hit,) = receiver.hits
    assert sinks.TIMESTAMP_HEADER in hit.headers
    assert sinks.SIGNATURE_HEADER not in hit.headers


async def test_webhook_retries_server_errors_with_doubling_backoff(
    receiver: Receiver, fast_backoff: float
) -> None:
    receiver.script = [500, 503, 200]
    sink = WebhookSink(receiver.url, SECRET)
    try:
        sink.send(ALERT)
        await finished(sink)
    finally:
        sink.close()
    assert sink.delivered == 1 and sink.dropped == 0
    assert len(receiver.hits) == 3
    first, second, third = (h.at for h in receiver.hits)
    assert second - first >= fast_backoff * 0.9
    assert third - second >= 2 * fast_backoff * 0.9  # doubled
    # Every attempt is signed over its own timestamp, the body unchanged.
    for hit in receiver.hits:
        stamp = hit.headers[sinks.TIMESTAMP_HEADER]
        assert hit.headers[sinks.SIGNATURE_HEADER] == expected_signature(SECRET, stamp, hit.body)
        assert hit.body == receiver.hits[0].body


async def test_webhook_retries_429_and_408(receiver: Receiver, fast_backoff: float) -> None:
    receiver.script = [429, 408]
    sink = WebhookSink(receiver.url, None)
    try:
        sink.send(ALERT)
        await finished(sink)
    finally:
        sink.close()
    assert sink.delivered == 1
    assert len(receiver.hits) == 3


async def test_webhook_gives_up_after_the_last_attempt(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sinks, "WEBHOOK_BACKOFF_S", 0.01)
    receiver.script = [500] * (sinks.WEBHOOK_ATTEMPTS + 5)
    sink = WebhookSink(receiver.url, SECRET)
    try:
        sink.send(ALERT)
        await finished(sink)
        await asyncio.sleep(0.2)  # room for an attempt too many, were there one
    finally:
        sink.close()
    assert sink.delivered == 0 and sink.dropped == 1
    assert len(receiver.hits) == sinks.WEBHOOK_ATTEMPTS
    assert f"gave up after {sinks.WEBHOOK_ATTEMPTS} attempt(s): HTTP 500" in caplog.text


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_webhook_does_not_retry_a_refusal(
    receiver: Receiver, fast_backoff: float, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [status, 200]
    sink = WebhookSink(receiver.url, SECRET)
    try:
        sink.send(ALERT)
        await finished(sink)
        await asyncio.sleep(4 * fast_backoff)
    finally:
        sink.close()
    assert sink.delivered == 0 and sink.dropped == 1
    assert len(receiver.hits) == 1
    assert f"HTTP {status}" in caplog.text


async def test_webhook_retries_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "WEBHOOK_BACKOFF_S", 0.01)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nothing listens on
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", SECRET)
    try:
        sink.send(ALERT)
        await finished(sink)
    finally:
        sink.close()
    assert sink.delivered == 0 and sink.dropped == 1


async def test_webhook_close_stops_a_backoff_wait(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that keeps failing does not hold up shutdown for the whole backoff."""
    monkeypatch.setattr(sinks, "WEBHOOK_BACKOFF_S", 30.0)
    receiver.script = [500] * 10
    sink = WebhookSink(receiver.url, None)
    sink.send(ALERT)
    await eventually(lambda: receiver.hits, "the first attempt")
    started = time.monotonic()
    await asyncio.to_thread(sink.close)
    assert time.monotonic() - started < 5.0
    assert len(receiver.hits) == 1
    assert sink.dropped == 1


# ── JSON lines, syslog, a full queue ───────────────────────────────────────────────────────
async def test_jsonl_sink_appends_one_line_per_alert(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"earlier": true}\n')
    sink = JsonlSink(path)
    alerts = [{**ALERT, "id": f"alr_{n}"} for n in range(3)]
    try:
        for alert in alerts:
            sink.send(alert)
        await eventually(lambda: sink.delivered == 3, "three lines written")
    finally:
        sink.close()
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [{"earlier": True}, *alerts]


async def test_syslog_sink_sends_the_alert_as_a_datagram() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    sink = SyslogSink("127.0.0.1", server.getsockname()[1])
    try:
        sink.send(ALERT)
        datagram = await asyncio.to_thread(server.recv, 65536)
    finally:
        sink.close()
        server.close()
    assert datagram.startswith(b"<")
    assert datagram.endswith(orjson.dumps(ALERT))
    assert b" garrison " in datagram


async def test_a_full_sink_queue_counts_what_it_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sinks, "SINK_QUEUE_MAX", 2)
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(path)
    started, release = threading.Event(), threading.Event()
    deliver = sink._deliver

    def stuck(alert: dict[str, Any]) -> None:
        started.set()
        release.wait(30)
        deliver(alert)

    monkeypatch.setattr(sink, "_deliver", stuck)
    try:
        sink.send({**ALERT, "id": "alr_0"})
        assert await asyncio.to_thread(started.wait, 10)
        begun = time.monotonic()
        for n in range(1, 6):
            sink.send({**ALERT, "id": f"alr_{n}"})
        assert time.monotonic() - begun < 1.0  # send never waits on the receiver
        assert sink.dropped == 3  # 1 in delivery, 2 queued, 3 did not fit
        assert "queue full: alert alr_5 not delivered" in caplog.text
        release.set()
        await eventually(lambda: sink.delivered == 3, "the queued alerts delivered")
    finally:
        release.set()
        sink.close()
    ids = [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]
    assert ids == ["alr_0", "alr_1", "alr_2"]
    assert sink.dropped == 3


# ── end to end: a gateway's webhook ────────────────────────────────────────────────────────
SECRET_ENV = "GARRISON_TEST_ALERTS_SECRET"


async def chat(world: World, key: str, addr: str) -> int:
    status, _ = await chat_from(world.base, key, addr)
    return status


async def test_gateway_webhook_receives_the_alert_of_a_scripted_attack(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "gateway-hook-secret-42"
    monkeypatch.setenv(SECRET_ENV, secret)
    jsonl = tmp_path / "alerts.jsonl"
    world = await start_world(tmp_path)
    try:
        await world.gateway.stop()
        world.settings = dataclasses.replace(
            world.settings,
            alerts_webhook_url=receiver.url,
            alerts_webhook_secret_env=SECRET_ENV,
            alerts_jsonl=str(jsonl),
        )
        world.gateway = Gateway(world.settings)
        await world.gateway.start()

        # The attack: bob's key from its usual address, then from another network.
        assert await chat(world, world.keys["bob"], "127.0.0.1") == 200
        await chat(world, world.keys["bob"], "127.0.1.9")

        def multi() -> list[Hit]:
            return [h for h in receiver.hits if b"key-multi-network" in h.body]

        (hit,) = await eventually(multi, "the alert at the webhook")
        stamp = hit.headers[sinks.TIMESTAMP_HEADER]
        assert abs(int(stamp) - time.time()) < 60
        assert hit.headers[sinks.SIGNATURE_HEADER] == expected_signature(
            secret.encode(), stamp, hit.body
        )
        payload = orjson.loads(hit.body)
        assert payload["rule_id"] == "key-multi-network"
        assert payload["severity"] == "high"
        assert payload["reason"] == "credential.multi_network"
        assert payload["subject"]["kind"] == "credential"
        assert payload["detail"]["networks"] == ["127.0.0.0/24", "127.0.1.0/24"]
        acted = {a["action"]: a for a in payload["actions"]}
        assert set(acted) == {"open_incident", "lock_credential"}
        assert acted["lock_credential"]["target"] == payload["subject"]["id"]
        await world.settle()
        (raised,) = [
            e for e in world.events("alert.raised") if e["data"]["rule_id"] == "key-multi-network"
        ]
        assert payload["id"] == raised["data"]["alert_id"]
        assert payload["evidence"] == raised["data"]["evidence"]
        assert secret.encode() not in hit.body
        assert secret.encode() not in world.raw_audit()
        # The JSON-lines sink got the same alert.
        lines = await eventually(
            lambda: [orjson.loads(x) for x in jsonl.read_bytes().splitlines()],
            "the alert in the JSON-lines file",
        )
        assert payload in lines
    finally:
        await stop_world(world)
