"""A seeded directory, a mock upstream and a running gateway, for tests.

``World`` knows every key it issued (tests need them) and can read the audit log back. Its
directory and audit log are a SQLite file under its root, or (``database_url``) a PostgreSQL
database the test made (``tests.support.pg.fresh_database(migrated=False)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.bootstrap import enroll_locally, init, open_directory, write_credential
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi, VendorStatus
from garrison.edge.client_address import ForwardedHeader
from garrison.errors import AuditUnavailable
from garrison.gateway.limits import GatewayLimits
from garrison.identity.oidc_config import OidcSettings
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway
from garrison.store import Directory
from tests.support import pg

UPSTREAM_KEY = "sk-upstream-SECRET-0123456789abcdef"
# Longest ``World.signed`` waits for the idle checkpoint: many times its 1 s quiet interval
# (a loaded machine delays the writer thread's idle ticks).
SIGNED_WITHIN_S = 15.0


class SkewedClock:
    """A gateway's's wall clock, ``ahead`` seconds past the real one (moved by the test)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@dataclass
class World:
    root: Path
    settings: Settings
    directory: Directory
    mock: MockUpstream
    gateway: Gateway
    keys: dict[str, str] = field(default_factory=dict)
    admin_key: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"

    @property
    def admin_base(self) -> str:
        """The admin API: its own listener when it has one, else the gateway's."""
        return f"http://127.0.0.1:{self.gateway.admin_port or self.gateway.port}"

    @property
    def db_path(self) -> Path:
        return Path(self.settings.database_url.removeprefix("sqlite:///"))

    def _records(self) -> list[bytes]:
        with self.directory.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT record FROM audit_events ORDER BY seq"))
            return [bytes(r[0]) for r in rows]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Audit records, decoded, in order (optionally only those named ``name``)."""
        records = [orjson.loads(r) for r in self._records()]
        return [r for r in records if name is None or r["name"] == name]

    def raw_audit(self) -> bytes:
        return b"\n".join(self._records())

    async def settle(self) -> None:
        """Wait until every queued audit event is committed."""
        deadline = time.monotonic() + 5
        while self.gateway.audit.depth and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # A barrier, not a guess: the writer commits in order, so once an urgent marker
        # queued now is durable, everything queued before it is too (a fixed sleep was
        # too short on a loaded machine). While the log is down there is nothing to wait for.
        try:
            await self.gateway.audit.integrate()
        except AuditUnavailable:
            await asyncio.sleep(0.05)

    async def signed(self, within: float = SIGNED_WITHIN_S) -> int:
        """Wait until a stored checkpoint covers every event committed so far (the idle
        writer signs one after a quiet ``CHECKPOINT_INTERVAL_S``); returns its tree size.
        A condition, not a pause: a pause of a little more than the interval was too short
        when the machine was loaded."""
        await self.settle()
        deadline = time.monotonic() + within
        while True:
            with self.directory.engine.connect() as conn:
                events = conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar_one()
                signed = conn.execute(
                    sa.text("SELECT max(tree_size) FROM audit_checkpoints")
                ).scalar_one()
            if signed is not None and signed == events:
                return int(signed)
            assert time.monotonic() < deadline, f"{events} events, signed only {signed}"
            await asyncio.sleep(0.05)

    async def reload(self) -> None:
        await self.gateway.reload()


def seed(directory: Directory, upstream: str, now: float) -> dict[str, str]:
    """Orgs, people, models (incl. failure models) and keys; returns name → key."""
    directory.create_vendor(
        "contractor-co",
        sponsor="admin",
        contract_start=now - 86400,
        contract_end=now + 30 * 86400,
        networks=["127.0.0.0/8"],
        seat_limit=10,
        ceiling_level=Level.INTERNAL,
        now=now,
    )
    directory.set_vendor_status("contractor-co", VendorStatus.ACTIVE, now=now)
    directory.create_principal(
        "alice",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.RESTRICTED,
        compartments=["cyber"],
        now=now,
    )
    directory.create_principal(
        "bob", org="contractor-co", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    directory.create_principal(
        "carol", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    common: dict[str, Any] = dict(
        upstream_url=upstream, auth_style=AuthStyle.BEARER, upstream_key=UPSTREAM_KEY, now=now
    )
    directory.create_model(
        "assistant",
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        level=Level.INTERNAL,
        **common,
    )
    directory.create_model(
        "cyber-model",
        upstream_model="mock-large",
        api=UpstreamApi.OPENAI,
        level=Level.RESTRICTED,
        compartments=["cyber"],
        **common,
    )
    for upstream_name in ("fail-400", "fail-500", "hang", "slow-stream", "drop"):
        directory.create_model(
            f"m-{upstream_name}",
            upstream_model=upstream_name,
            api=UpstreamApi.OPENAI,
            level=Level.INTERNAL,
            **common,
        )
    directory.create_model(
        "claude",
        upstream_model="mock-small",
        api=UpstreamApi.ANTHROPIC,
        level=Level.INTERNAL,
        upstream_url=upstream,
        auth_style=AuthStyle.X_API_KEY,
        upstream_key=UPSTREAM_KEY,
        now=now,
    )
    directory.create_model(
        "claude-fail-400",
        upstream_model="fail-400",
        api=UpstreamApi.ANTHROPIC,
        level=Level.INTERNAL,
        upstream_url=upstream,
        auth_style=AuthStyle.X_API_KEY,
        upstream_key=UPSTREAM_KEY,
        now=now,
    )
    keys = {
        "alice": directory.create_key("alice", now=now).key.token.reveal(),
        "bob": directory.create_key("bob", now=now, networks=["127.0.0.0/8"]).key.token.reveal(),
        "carol": directory.create_key("carol", now=now).key.token.reveal(),
        # Bound to a network the tests never come from (still loopback: 127.0.0.2 only).
        "bob-netbound": directory.create_key(
            "bob", now=now, networks=["127.0.0.2/32"]
        ).key.token.reveal(),
        "bob-short": directory.create_key("bob", now=now, expires_in=1).key.token.reveal(),
    }
    return keys


async def start_world(
    root: Path,
    *,
    limits: GatewayLimits | None = None,
    mock_config: MockConfig | None = None,
    trusted_proxies: tuple[Any, ...] = (),
    forwarded_header: ForwardedHeader = ForwardedHeader.X_FORWARDED_FOR,
    capture_bodies: bool = False,
    detect: bool = True,
    oidc: OidcSettings | None = None,
    audit_jsonl: Path | None = None,
    database_url: str | None = None,
    admin_listen: str | None = None,
    clock: Callable[[], float] = time.time,
) -> World:
    done = init(root / "data", database_url=database_url)
    # The first admin enrolls (its key is its own), as `garrison enroll` would.
    admin_key = enroll_locally(done.settings, done.codes[0].code.reveal())
    assert done.settings.admin_credential_file is not None  # as `enroll --save` leaves it
    write_credential(done.settings.admin_credential_file, admin_key.key.token.reveal())
    mock = MockUpstream(mock_config or MockConfig(expected_api_key=UPSTREAM_KEY))
    upstream_port = await mock.start("127.0.0.1", 0)
    directory = open_directory(done.settings, actor="test")
    keys = seed(directory, f"http://127.0.0.1:{upstream_port}/v1", time.time())
    settings = Settings(
        database_url=done.settings.database_url,
        key_dir=done.settings.key_dir,
        host="127.0.0.1",
        port=0,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
        limits=limits or GatewayLimits(),
        witness_dir=done.settings.witness_dir,
        capture_bodies=capture_bodies,
        detect_enabled=detect,
        oidc=oidc or OidcSettings(),
        audit_jsonl=audit_jsonl,
        admin_listen=admin_listen,
    )
    gateway = Gateway(settings, clock=clock)
    await gateway.start()
    return World(
        root=root,
        settings=settings,
        directory=directory,
        mock=mock,
        gateway=gateway,
        keys=keys,
        admin_key=admin_key.key.token.reveal(),
    )


async def stop_world(world: World) -> None:
    await world.gateway.stop()
    await world.mock.stop()
    world.directory.engine.dispose()


@contextlib.asynccontextmanager
async def world_on(backend: str, root: Path, **kw: Any) -> AsyncIterator[World]:
    """A running world on ``backend`` ("sqlite" or "postgresql": a fresh database of its own,
    dropped afterwards; skipped with the reason when there is no PostgreSQL)."""
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            kw["database_url"] = stack.enter_context(pg.fresh_database())
        w = await start_world(root, **kw)
        try:
            yield w
        finally:
            await stop_world(w)
