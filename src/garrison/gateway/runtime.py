"""One gateway process: open the store, load the snapshot, start the audit writer, the
snapshot watcher, the upstream client pool and the HTTP listener; stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from garrison.admin.api import AdminBackend
from garrison.audit import AuditEvent, AuditLog, EventName, SqliteAuditSink
from garrison.audit.checkpoint import Signer, public_b64
from garrison.audit.exporters import (
    Exporter,
    JsonlExporter,
    SyslogExporter,
    parse_syslog_address,
)
from garrison.audit.witness import DirectoryWitness
from garrison.config import Settings
from garrison.detect.observation import Severity
from garrison.detect.rules import RuleSet
from garrison.domain import VendorStatus
from garrison.errors import ConfigError
from garrison.gateway.app import build_app
from garrison.gateway.containment import cut_covered
from garrison.gateway.http_server import HttpServer
from garrison.gateway.state import GatewayState
from garrison.keyring import CAPTURE_FILE, Sealer, load_pepper
from garrison.policy.engine import CompiledPolicies, PolicyEngine, PolicyError, build_entities
from garrison.respond.monitor import Monitor
from garrison.respond.sinks import JsonlSink, Sink, SyslogSink, WebhookSink
from garrison.store import load_snapshot, make_engine, migrate, sqlite_path
from garrison.store.directory import Directory
from garrison.store.snapshot import Snapshot, VersionProbe
from garrison.store.vendors import expire_ended_contracts

log = logging.getLogger("garrison.gateway")

# How often each process checks the change feed for directory writes. 50 ms keeps admin
# changes enforced well inside the 100 ms propagation target at one cheap query per tick.
SNAPSHOT_POLL_S = 0.05
# Young-generation GC runs every 10,000 net allocations instead of 700: a call allocates a
# few hundred short-lived objects, and collecting every couple of calls cost ~5 % of the loop.
GC_THRESHOLDS = (10_000, 20, 20)
# Idle upstream connections kept per process (reused across calls to the same server).
UPSTREAM_KEEPALIVE_S = 30.0


class Gateway:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        path = sqlite_path(settings.database_url)
        if path is None:
            raise ConfigError("only the embedded SQLite store is supported in this version")
        self.engine = make_engine(settings.database_url)
        self._db_path = path
        self.pepper = load_pepper(settings.key_dir)
        self.sealer = Sealer.from_dir(settings.key_dir)
        self.signer = Signer.from_dir(settings.key_dir)
        witness = DirectoryWitness(settings.witness_dir) if settings.witness_dir else None
        exporters: list[Exporter] = []
        if settings.audit_jsonl is not None:
            exporters.append(JsonlExporter(settings.audit_jsonl))
        if settings.audit_syslog:
            try:
                exporters.append(SyslogExporter(*parse_syslog_address(settings.audit_syslog)))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.sink = SqliteAuditSink(
            path, signer=self.signer, witness=witness, exporters=exporters, clock=clock
        )
        self.audit = AuditLog(self.sink, clock=clock)
        self.state = GatewayState(
            snapshot=Snapshot.empty(),
            pepper=self.pepper,
            audit=self.audit,
            limits=settings.limits,
            trusted_proxies=settings.trusted_proxies,
            clock=clock,
            audit_fail_open=settings.audit_fail_open,
            stale_mode=settings.lock_stale_mode,
            capture=Sealer.from_dir(settings.key_dir, CAPTURE_FILE)
            if settings.capture_bodies
            else None,
        )
        if settings.audit_fail_open:
            log.warning(
                "AUDIT FAIL-OPEN IS ON: calls will be forwarded even when the audit log "
                "cannot record them"
            )
        admin = AdminBackend(
            engine=self.engine,
            pepper=self.pepper,
            sealer=self.sealer,
            reload=self.reload,
            db_path=path,
            public_keys={kid: public_b64(k) for kid, k in self.signer.public_keys().items()},
        )
        self.monitor = self._monitor(settings) if settings.detect_enabled else None
        if self.monitor is not None:
            self.sink.add_listener(self.monitor.observe)
            admin = dataclasses.replace(admin, monitor=self.monitor)
        self.http = HttpServer(build_app(self.state, admin), settings.limits)
        self._watcher: asyncio.Task[None] | None = None
        self._compiled: CompiledPolicies | None = None
        self._reloading = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._probe = VersionProbe(path)
        self.port = 0

    def _monitor(self, settings: Settings) -> Monitor:
        sinks: list[Sink] = []
        if settings.alerts_webhook_url:
            secret_env = settings.alerts_webhook_secret_env
            secret = os.environ.get(secret_env, "") if secret_env else ""
            if secret_env and not secret:
                raise ConfigError(f"[alerts] webhook_secret_env: {secret_env} is empty or unset")
            sinks.append(WebhookSink(settings.alerts_webhook_url, secret.encode() or None))
        if settings.alerts_jsonl:
            target = None if settings.alerts_jsonl == "-" else Path(settings.alerts_jsonl)
            sinks.append(JsonlSink(target))
        if settings.alerts_syslog:
            try:
                sinks.append(SyslogSink(*parse_syslog_address(settings.alerts_syslog)))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

        def directory_for(actor: str) -> Directory:
            return Directory(self.engine, actor=actor, pepper=self.pepper, sealer=self.sealer)

        def on_rules(ruleset: RuleSet) -> None:
            self.state.content_rules = tuple(ruleset.content_patterns())

        return Monitor(
            engine=self.engine,
            db_path=self._db_path,
            directory_for=directory_for,
            facts=lambda: self.state.snapshot,
            after_write=self._reload_soon,
            rules_path=settings.rules_path,
            sinks=sinks,
            min_severity=Severity.parse(settings.alerts_min_severity),
            on_rules=on_rules,
            clock=self.clock,
        )

    def _reload_soon(self) -> None:
        """From another thread: load the new snapshot on the event loop (a playbook locked)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self._tasks.add(asyncio.ensure_future(self.reload())))

    def _load(self) -> tuple[Snapshot, PolicyEngine]:
        """A snapshot and its policy engine (in a worker thread: parsing takes milliseconds)."""
        snapshot = load_snapshot(self.engine, self.sealer)
        compiled = self._compiled
        if compiled is None or compiled.version != snapshot.policy_version:
            try:
                compiled = CompiledPolicies(snapshot.policy_text, version=snapshot.policy_version)
            except PolicyError as exc:
                if compiled is None:
                    # No valid set yet (first load): the base policies alone, and loudly.
                    log.error(
                        "organisation policy set %d refused: %s", snapshot.policy_version, exc
                    )
                    compiled = CompiledPolicies("", version=snapshot.policy_version)
                else:
                    log.error(
                        "organisation policy set %d refused; version %d stays in force: %s",
                        snapshot.policy_version,
                        compiled.version,
                        exc,
                    )
            self._compiled = compiled
        vendor_orgs = frozenset(o.id for o in snapshot.orgs.values() if o.vendor is not None)
        entities = build_entities(
            snapshot.principals.values(),
            snapshot.models.values(),
            {o.id: o.kind.value for o in snapshot.orgs.values()},
            vendor_orgs,
        )
        return snapshot, PolicyEngine(compiled, entities)

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        migrate(self.engine)
        self.state.snapshot, self.state.policy = await asyncio.to_thread(self._load)
        self.audit.start()
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.start)
        limits = self.settings.limits
        self.state.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limits.max_concurrent_requests,
                keepalive_timeout=UPSTREAM_KEEPALIVE_S,
                enable_cleanup_closed=True,
            ),
            auto_decompress=False,
            # Never keep upstream cookies: one principal's Set-Cookie must not ride on the
            # next principal's call (aiohttp's default jar would do that for host names).
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )
        self.port = await self.http.start(self.settings.host, self.settings.port)
        self.state.lock_view_at = time.monotonic()  # the snapshot above is fresh
        self._watcher = asyncio.create_task(self._watch(), name="garrison-snapshot-watch")
        # Everything built so far lives as long as the process: keep it out of GC passes.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        await self.audit.append(
            AuditEvent(
                EventName.GATEWAY_STARTED,
                at=self.clock(),
                actor="garrison",
                data={
                    "host": self.settings.host,
                    "port": self.port,
                    "snapshot_version": self.state.snapshot.version,
                },
            )
        )
        return self.port

    async def reload(self) -> None:
        async with self._reloading:
            snapshot, policy = await asyncio.to_thread(self._load)
        # Reloads can overlap (the watcher, an admin write): never swap an older one in.
        if snapshot.version >= self.state.snapshot.version:
            # Swap and cut with no await between (see gateway.containment).
            self.state.snapshot = snapshot
            self.state.policy = policy
            self.state.lock_view_at = time.monotonic()
            cut_covered(self.state)

    async def _contract_clock(self) -> None:
        """Record a vendor's contract end as ``vendor.expired`` (actor: the contract clock).

        The data plane already refuses the vendor's people from the instant the contract
        ends (the snapshot carries the window); this only makes the directory and the log say
        so. Cheap: nothing is read unless a loaded contract has passed its end."""
        now = self.clock()
        due = [
            org.name
            for org in self.state.snapshot.orgs.values()
            if org.vendor is not None
            and org.vendor.status in (VendorStatus.ACTIVE, VendorStatus.SUSPENDED)
            and org.vendor.contract_end <= now
        ]
        if due:
            directory = Directory(
                self.engine, actor="contract-clock", pepper=self.pepper, sealer=self.sealer
            )
            await asyncio.to_thread(expire_ended_contracts, directory, now)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_POLL_S)
            try:
                await self._contract_clock()
                version = self._probe.version()
                if version != self.state.snapshot.version:
                    await self.reload()
                    log.info("snapshot %d loaded", self.state.snapshot.version)
                else:
                    self.state.lock_view_at = time.monotonic()
                # A lock with a TTL, or a contract, can end or start covering a call without
                # any write: re-check the live calls on every tick (cheap when none is live).
                cut_covered(self.state)
            except Exception as exc:  # keep watching; the old snapshot stays in force
                log.error("snapshot reload failed: %s", exc)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.http.stop()
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.stop)
        for task in list(self._tasks):
            task.cancel()
        if self.state.session is not None:
            await self.state.session.close()
        with contextlib.suppress(Exception):
            self.audit.append_later(
                AuditEvent(
                    EventName.GATEWAY_STOPPED,
                    at=self.clock(),
                    actor="garrison",
                    data={"calls": self.state.calls},
                )
            )
        await asyncio.to_thread(self.audit.close)
        self._probe.close()
        self.engine.dispose()


async def serve_forever(settings: Settings, on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until cancelled; ``on_ready`` gets the bound port once the listener is up."""
    gateway = Gateway(settings)
    await gateway.start()
    log.info("garrison listening on http://%s:%d", settings.host, gateway.port)
    if on_ready is not None:
        on_ready(gateway.port)
    try:
        await asyncio.Event().wait()
    finally:
        await gateway.stop()
