"""``garrison drill contractor-breach``: the scenario Garrison exists for, end to end.

A vendor's contractor works normally from the vendor's network (127.0.0.2) with streaming
calls. Their key then leaks: an outside group uses it from another network (127.0.1.9)
while the contractor is still working, and tries a canary key planted in the vendor's CI.
The drill measures, from the first hostile call: detection (the first alert), containment
(the first lock), hostile calls that succeeded after containment (must be 0), streams cut,
and prints the timeline and the incident report the playbook opened.

Everything is driven over HTTP (admin API and data plane), so it runs against a gateway it
starts itself (default: a temporary data directory, a mock model server, the built-in
rules) or against one it is pointed at (``--url`` with an admin key). Loopback only;
bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from garrison.safe_text import terminal_safe

# The whole drill gives up after this long.
DRILL_TIMEOUT_S = 60.0
# How long the hostile side keeps trying after containment (to count what still gets in).
AFTER_CONTAINMENT_S = 1.5
# Targets of the issue.
DETECT_TARGET_S = 1.0
CONTAIN_TARGET_S = 1.0
CONTRACTOR_ADDR = "127.0.0.2"
ATTACKER_ADDR = "127.0.1.9"


@dataclass
class CallRecord:
    who: str
    address: str
    started: float
    ended: float = 0.0
    status: int = 0
    stream: bool = False
    chunks: int = 0
    cut: bool = False  # ended with an error event after content
    completed: bool = False


@dataclass
class DrillResult:
    started_at: float
    first_hostile_at: float = 0.0
    detected_at: float | None = None
    contained_at: float | None = None
    alert: dict[str, Any] | None = None
    locks: list[dict[str, Any]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    incident_id: str | None = None
    report_md: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def detect_s(self) -> float | None:
        return None if self.detected_at is None else self.detected_at - self.first_hostile_at

    @property
    def contain_s(self) -> float | None:
        return None if self.contained_at is None else self.contained_at - self.first_hostile_at

    @property
    def after_containment(self) -> int:
        """Hostile calls started after containment that still got an answer."""
        if self.contained_at is None:
            return 0
        return sum(
            1
            for c in self.calls
            if c.who == "attacker" and c.started >= self.contained_at and c.status == 200
        )

    @property
    def streams_cut(self) -> int:
        return sum(1 for c in self.calls if c.cut)

    @property
    def passed(self) -> bool:
        return (
            self.detect_s is not None
            and self.contain_s is not None
            and self.detect_s <= DETECT_TARGET_S
            and self.contain_s <= CONTAIN_TARGET_S
            and self.after_containment == 0
        )

    def figures(self) -> dict[str, Any]:
        return {
            "detect_s": None if self.detect_s is None else round(self.detect_s, 3),
            "contain_s": None if self.contain_s is None else round(self.contain_s, 3),
            "hostile_calls_after_containment_succeeded": self.after_containment,
            "streams_cut": self.streams_cut,
            "hostile_calls": sum(1 for c in self.calls if c.who == "attacker"),
            "alerts": [
                {"rule_id": a["rule_id"], "severity": a["severity"], "actions": a["actions"]}
                for a in self.alerts
            ],
            "locks": [
                {"id": lk["id"], "kind": lk["kind"], "by": lk["created_by"]} for lk in self.locks
            ],
            "incident_id": self.incident_id,
            "targets": {"detect_s": DETECT_TARGET_S, "contain_s": CONTAIN_TARGET_S},
            "passed": self.passed,
        }


async def _enroll(base: str, code: str, address: str) -> str:
    """Redeem an enrollment code from ``address`` (no key: the person has none yet)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{base}/admin/v1/enroll", json={"code": code, "expires_in_s": 86400}) as resp,
    ):
        value = orjson.loads(await resp.read())
        if resp.status >= 400:
            raise RuntimeError(f"enroll: {resp.status} {value}")
        return str(value["key"])


class _Admin:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self.session = session
        self.base = base
        self.headers = {"authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        async with self.session.request(
            method, f"{self.base}/admin/v1{path}", json=body, headers=self.headers, params=params
        ) as resp:
            data = await resp.read()
            value = orjson.loads(data) if data else None
            if resp.status >= 400:
                message = value.get("error", {}).get("message") if isinstance(value, dict) else ""
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {message}")
            return value


async def _call(
    base: str,
    key: str,
    model: str,
    who: str,
    address: str,
    record: list[CallRecord],
    *,
    stream: bool,
) -> CallRecord:
    rec = CallRecord(who, address, time.time(), stream=stream)
    record.append(rec)
    body = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Summarise the design doc."}],
    }
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.post(
                f"{base}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
            ) as resp,
        ):
            rec.status = resp.status
            if resp.status == 200 and stream:
                async for line in resp.content:
                    if line.startswith(b'data: {"error"'):
                        rec.cut = rec.chunks > 0
                    elif line.startswith(b"data: [DONE]"):
                        rec.completed = True
                    elif line.startswith(b"data: "):
                        rec.chunks += 1
            else:
                await resp.read()
                rec.completed = resp.status == 200
    except (aiohttp.ClientError, OSError):
        rec.status = rec.status or -1
    rec.ended = time.time()
    return rec


def first_refusal(calls: list[CallRecord]) -> float | None:
    """When the hostile side was first seen refused: the earliest end of an attacker's call
    answered 403. Only finished calls count: a call's status is known before its end time
    is set, and an unset end (0.0) would read as containment at the epoch."""
    ends = [c.ended for c in calls if c.who == "attacker" and c.status == 403 and c.ended > 0]
    return min(ends) if ends else None


async def run_scenario(base: str, admin_key: str, upstream_url: str) -> DrillResult:
    tag = secrets.token_hex(3)
    result = DrillResult(started_at=time.time())
    async with aiohttp.ClientSession() as session:
        admin = _Admin(session, base, admin_key)
        me = await admin.call("GET", "/whoami")
        now = datetime.now(UTC)
        vendor = f"drill-vendor-{tag}"
        await admin.call(
            "POST",
            "/vendors",
            {
                "name": vendor,
                "sponsor": me["name"],
                "networks": ["127.0.0.0/8"],
                "seat_limit": 3,
                "ceiling": "internal",
                "contract_start": (now - timedelta(minutes=5)).isoformat(),
                "contract_end": (now + timedelta(days=30)).isoformat(),
                "agreement_ref": "drill",
            },
        )
        await admin.call(
            "POST", f"/vendors/{vendor}/status", {"status": "active", "reason": "drill"}
        )
        contractor = f"contractor-{tag}"
        invited = await admin.call(
            "POST",
            "/principals",
            {"name": contractor, "org": vendor, "clearance": "internal", "invite": True},
        )
        bot = f"ci-bot-{tag}"
        await admin.call(
            "POST",
            "/principals",
            {"name": bot, "org": vendor, "kind": "service", "clearance": "internal"},
        )
        model = f"drill-model-{tag}"
        await admin.call(
            "POST",
            "/models",
            {
                "name": model,
                "upstream_url": upstream_url,
                "upstream_model": "mock-small",
                "level": "internal",
            },
        )
        # The contractor enrolls from their own network: the key is theirs alone.
        key = await _enroll(base, invited["enrollment_code"], CONTRACTOR_ADDR)
        canary = (
            await admin.call(
                "POST",
                "/keys",
                {"principal": bot, "expires_in_s": 86400, "canary": True, "note": "planted in CI"},
            )
        )["key"]

        # Normal work from the vendor's network.
        for _ in range(3):
            await _call(base, key, model, "contractor", CONTRACTOR_ADDR, result.calls, stream=True)
        # The contractor keeps working (a long stream) while the key is used elsewhere.
        working = asyncio.create_task(
            _call(base, key, model, "contractor", CONTRACTOR_ADDR, result.calls, stream=True)
        )
        await asyncio.sleep(0.2)
        result.first_hostile_at = time.time()
        stop = asyncio.Event()

        async def attacker() -> None:
            while not stop.is_set():
                await asyncio.gather(
                    _call(base, key, model, "attacker", ATTACKER_ADDR, result.calls, stream=True),
                    _call(
                        base, canary, model, "attacker", ATTACKER_ADDR, result.calls, stream=False
                    ),
                )
                await asyncio.sleep(0.05)

        hostile = asyncio.create_task(attacker())
        deadline = time.time() + DRILL_TIMEOUT_S
        try:
            while time.time() < deadline and (
                result.detected_at is None or result.contained_at is None
            ):
                alerts = await admin.call("GET", "/alerts", after=repr(result.started_at))
                mine = [
                    a
                    for a in alerts
                    if a["raised_at"] >= result.first_hostile_at
                    and a["rule_id"] in ("key-multi-network", "canary-key-used")
                ]
                if mine and result.detected_at is None:
                    result.detected_at = min(a["raised_at"] for a in mine)
                # Contained when the gateway is seen refusing the hostile side (when that
                # answer arrived: an upper bound, measured where the attacker stands).
                if result.contained_at is None:
                    result.contained_at = first_refusal(result.calls)
                await asyncio.sleep(0.02)
            await asyncio.sleep(AFTER_CONTAINMENT_S)
        finally:
            stop.set()
            await hostile
            await working
        result.alerts = [
            a
            for a in await admin.call("GET", "/alerts", after=repr(result.started_at))
            if a["raised_at"] >= result.first_hostile_at
        ]
        result.locks = [
            lk
            for lk in await admin.call("GET", "/locks")
            if lk["created_at"] >= result.first_hostile_at
        ]
        incidents = [a["incident_id"] for a in result.alerts if a.get("incident_id")]
        if incidents:
            result.incident_id = incidents[0]
            report = await admin.call("GET", f"/incidents/{incidents[0]}/report", format="md")
            result.report_md = report["content"]
    return result


def render(result: DrillResult) -> str:
    """The drill's account as Markdown: the timeline (a fixed-width block), the figures
    against their targets, then the incident report."""
    t0 = result.first_hostile_at

    def rel(ts: float | None) -> str:
        return "-" if ts is None else f"{ts - t0:+.3f}s"

    lines = [
        "# Contractor-breach drill",
        "",
        "## Timeline (relative to the first hostile call)",
        "",
        "```text",
    ]
    events: list[tuple[float, str]] = []
    refused_later = 0
    contained = result.contained_at
    for c in result.calls:
        if (
            c.who == "attacker"
            and contained is not None
            and c.started > contained
            and c.status == 403
        ):
            refused_later += 1
            continue
        what = "stream" if c.stream else "call"
        outcome = "cut mid-answer" if c.cut else str(c.status)
        events.append((c.started, f"{c.who:10} {what:6} from {c.address:10} → {outcome}"))
    for a in result.alerts:
        subject = f"{a['subject']['kind']} {a['subject']['id']}"
        events.append(
            (a["raised_at"], f"ALERT      {a['severity'].upper()} {a['rule_id']} ({subject})")
        )
    for lk in result.locks:
        events.append(
            (lk["created_at"], f"LOCK       {lk['kind']} {lk['target_name']} by {lk['created_by']}")
        )
    for ts, text in sorted(events):
        # Inside a fenced block: a name holding backticks must not close it.
        lines.append(f"  {rel(ts):>9}  {terminal_safe(text).replace('`', chr(39))}")
    if refused_later:
        lines.append(f"  {'':>9}  attacker calls refused (403) after containment: {refused_later}")
    figures = result.figures()
    lines += [
        "```",
        "",
        "## Result",
        "",
        f"- detection: {figures['detect_s']} s (target ≤ {DETECT_TARGET_S} s)",
        f"- containment: {figures['contain_s']} s (target ≤ {CONTAIN_TARGET_S} s)",
        "- hostile calls that succeeded after containment: "
        f"{figures['hostile_calls_after_containment_succeeded']} (must be 0)",
        f"- streams cut: {figures['streams_cut']}",
        f"- incident: {result.incident_id or '-'}",
        f"- result: **{'PASSED' if result.passed else 'FAILED'}**",
    ]
    if result.report_md:
        lines += ["", result.report_md]
    return "\n".join(lines)


async def run_local(keep: Path | None = None) -> DrillResult:
    """Start a mock model server and a gateway of its own, run the scenario, stop both."""
    from garrison.bootstrap import enroll_locally, init
    from garrison.config import Settings
    from garrison.mock import MockConfig, MockUpstream
    from garrison.server import Gateway

    root = keep or Path(tempfile.mkdtemp(prefix="garrison-drill-"))
    mock = MockUpstream(MockConfig(tokens=150, chunk_delay_ms=10))
    upstream = await mock.start("127.0.0.1", 0)
    gateway: Gateway | None = None
    try:
        done = init(root / "data")
        admin_key = enroll_locally(done.settings, done.codes[0].code.reveal())
        settings = Settings(
            database_url=done.settings.database_url,
            key_dir=done.settings.key_dir,
            host="127.0.0.1",
            port=0,
            witness_dir=done.settings.witness_dir,
        )
        gateway = Gateway(settings)
        port = await gateway.start()
        return await run_scenario(
            f"http://127.0.0.1:{port}",
            admin_key.key.token.reveal(),
            f"http://127.0.0.1:{upstream}/v1",
        )
    finally:
        if gateway is not None:
            await gateway.stop()
        await mock.stop()
        if keep is None:
            with contextlib.suppress(OSError):
                shutil.rmtree(root)
