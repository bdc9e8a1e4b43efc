"""The composition root: one Garrison process. Opens the store, loads the snapshot, starts
the audit writer, the snapshot watcher, the upstream client pool, detection, and both planes
(the data plane of ``garrison.gateway`` and the admin API of ``garrison.admin``) on their
listeners; stops them in reverse. Nothing below imports this module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from garrison.admin.api import AdminBackend, add_admin_routes
from garrison.audit import AuditEvent, EventName
from garrison.audit.checkpoint import Signer, public_b64
from garrison.audit.exporters import build_exporters, parse_syslog_address
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.witness import DirectoryWitness
from garrison.audit.writer import AuditLog
from garrison.config import Settings
from garrison.detect.observation import Finding, Severity
from garrison.detect.rules import RuleSet
from garrison.domain import Reason, VendorStatus
from garrison.domain.clock_guard import CLOCK_AGREE_S, ClockChange, ClockGuard
from garrison.domain.locks import Lock, LockKind
from garrison.domain.networks import parse_listen, parse_network
from garrison.edge.request_ids import new_request_id
from garrison.errors import AuditUnavailable, ConfigError
from garrison.gateway import fd_limit, tracing
from garrison.gateway.app import build_app
from garrison.gateway.body_work import BodyWork
from garrison.gateway.containment import Cut, cut_covered
from garrison.gateway.http_server import HttpServer
from garrison.gateway.memory_release import AfterOutage
from garrison.gateway.state import GatewayState
from garrison.identity.access_tokens import TokenSigner
from garrison.identity.dpop import MemoryReplayCache
from garrison.identity.token_auth import TokenAuth
from garrison.keyring import CAPTURE_FILE, Sealer, load_pepper
from garrison.metrics import render
from garrison.metrics_listener import MetricsListener
from garrison.policy.engine import CompiledPolicies, PolicyEngine, PolicyError, build_entities
from garrison.respond.monitor import Monitor
from garrison.respond.sinks import JsonlSink, Sink, SyslogSink, WebhookSink
from garrison.store import instances, load_snapshot, make_engine, migrate, sqlite_path
from garrison.store.directory import Directory
from garrison.store.emergency_locks import JOURNAL_FILE, EmergencyJournal, JournalFull
from garrison.store.locks import adopt_emergency_lock
from garrison.store.snapshot import Snapshot, VersionProbe
from garrison.store.vendors import expire_ended_contracts
from garrison.tls.listener import ReloadingTls

log = logging.getLogger("garrison.gateway")

# How often each process checks the change feed for directory writes. 50 ms keeps admin
# changes enforced well inside the 100 ms propagation target at one cheap query per tick.
SNAPSHOT_POLL_S = 0.05
# Young-generation GC runs every 10,000 net allocations instead of 700: a call allocates a
# few hundred short-lived objects, and collecting every couple of calls cost ~5 % of the loop.
GC_THRESHOLDS = (10_000, 20, 20)
# Idle upstream connections kept per process (reused across calls to the same server).
UPSTREAM_KEEPALIVE_S = 30.0
# A process that has not renewed its lease for this long is taken for dead and its unfinished
# calls get the outcome `process_ended`: several missed renewals, so a stalled disk or a busy
# moment never marks a live process's calls.
INSTANCE_LEASE_S = 15.0
# How often a process renews its lease (and looks for lapsed ones).
INSTANCE_RENEW_S = 2.0
# Free space the database's file system must keep: the WAL grows during an audit outage and
# checkpoints need room; below this /readyz says not ready and an alert is raised, before a
# full disk stops the log (and with it every call).
MIN_FREE_BYTES = 256 * 1024 * 1024
# How often free space is read (one statvfs).
DISK_CHECK_S = 5.0
# The signals a process manager stops a service with (systemd, Kubernetes, `docker stop`
# send SIGTERM; a terminal sends SIGINT): both drain, then stop with exit status 0.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# While draining, how often the live calls are counted.
DRAIN_POLL_S = 0.05
# After the drain deadline cuts the remaining calls, how long they get to write their final
# error event and outcome record before the listener is torn down.
CUT_SETTLE_S = 2.0


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._monotonic = monotonic
        self.clock_guard = ClockGuard.start(clock(), monotonic())
        path = sqlite_path(settings.database_url)
        if path is None:
            raise ConfigError("only the embedded SQLite store is supported in this version")
        self.engine = make_engine(settings.database_url)
        self._db_path = path
        self.pepper = load_pepper(settings.key_dir)
        self.sealer = Sealer.from_dir(settings.key_dir)
        self.signer = Signer.from_dir(settings.key_dir)
        witness = DirectoryWitness(settings.witness_dir) if settings.witness_dir else None
        try:
            exporters = build_exporters(settings.audit_jsonl, settings.audit_syslog)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.sink = SqliteAuditSink(
            path, signer=self.signer, witness=witness, exporters=exporters, clock=clock
        )
        self.audit = AuditLog(self.sink, clock=clock)
        # Gives the memory an audit outage's backlog took back once it is written.
        self._after_outage = AfterOutage()
        self.state = GatewayState(
            snapshot=Snapshot.empty(),
            pepper=self.pepper,
            audit=self.audit,
            limits=settings.limits,
            trusted_proxies=settings.trusted_proxies,
            forwarded_header=settings.forwarded_header,
            clock=clock,
            audit_fail_open=settings.audit_fail_open,
            stale_mode=settings.lock_stale_mode,
            capture=Sealer.from_dir(settings.key_dir, CAPTURE_FILE)
            if settings.capture_bodies
            else None,
            tokens=TokenAuth(
                signer=TokenSigner.from_dir(settings.key_dir),
                replay=MemoryReplayCache(),
                public_url=settings.token_public_url,
            ),
            identity_policy=settings.identity_policy,
        )
        if settings.audit_fail_open:
            log.warning(
                "AUDIT FAIL-OPEN IS ON: calls will be forwarded even when the audit log "
                "cannot record them"
            )
        self._data_dir = path.parent
        self.emergency = EmergencyJournal(path.parent / JOURNAL_FILE)
        # Locks placed through the emergency journal and not yet in the database, by id.
        self._emergency_locks: dict[str, Lock] = {}
        admin = AdminBackend(
            emergency_lock=self.place_emergency_lock,
            engine=self.engine,
            pepper=self.pepper,
            sealer=self.sealer,
            reload=self.reload,
            db_path=path,
            public_keys={kid: public_b64(k) for kid, k in self.signer.public_keys().items()},
        )
        if settings.oidc.enabled:
            admin = dataclasses.replace(admin, signin=_signin(settings, self.state.tokens))
        self.monitor = self._monitor(settings) if settings.detect_enabled else None
        if self.monitor is not None:
            self.sink.add_listener(self.monitor.observe)
            admin = dataclasses.replace(admin, monitor=self.monitor)
        admin = dataclasses.replace(admin, metrics=lambda: render(self.state, self.monitor))
        # The admin plane reads this process through its narrow view (ProcessState).
        mount_admin = functools.partial(add_admin_routes, backend=admin, process=self.state)
        # The admin API on the data listener, or (``[admin] listen``) on its own only.
        apart = settings.admin_listen is not None
        self._settings_tracing = bool(settings.tracing_otlp_endpoint)
        if settings.tracing_otlp_endpoint:  # [tracing]: only then is OpenTelemetry loaded
            tracing.configure(settings.tracing_otlp_endpoint)
        self.http = HttpServer(
            build_app(self.state, None if apart else mount_admin),
            settings.limits,
            settings.trusted_proxies,
        )
        self.admin_http = (
            HttpServer(
                build_app(self.state, mount_admin, data_routes=False),
                settings.limits,
                settings.trusted_proxies,
            )
            if apart
            else None
        )
        self.admin_port = 0
        # HTTPS on both listeners; a bad pair stops the start here, in one line.
        self.tls = (
            ReloadingTls(settings.tls_cert_file, settings.tls_key_file)
            if settings.tls_cert_file is not None and settings.tls_key_file is not None
            else None
        )
        self._tls_watch: asyncio.Task[None] | None = None
        if settings.metrics_model_labels:
            self.state.model_outcomes = Counter()
        self.metrics = (
            MetricsListener(self.state, self.monitor, settings.metrics_listen)
            if settings.metrics_listen
            else None
        )
        self._watcher: asyncio.Task[None] | None = None
        self._lease: asyncio.Task[None] | None = None
        # This process among those on the database: its request ids start with this.
        self.instance_id = new_request_id.prefix
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
            if not secret:
                # Not the URL: webhook URLs often carry the receiver's token.
                log.warning(
                    "ALERT WEBHOOK IS UNSIGNED: alerts go out without a signature, so the "
                    "receiver cannot tell them from forgeries; set [alerts] webhook_secret_env"
                )
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
        await asyncio.to_thread(self.emergency.preallocate)
        await asyncio.to_thread(
            instances.register,
            self.engine,
            self.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            now=self.clock(),
            lease_s=INSTANCE_LEASE_S,
        )
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
        self.state.bodies = BodyWork(limits.offload_body_bytes, limits.body_workers)
        self.state.bodies.start()
        context = self.tls.context if self.tls is not None else None
        self.port = await self.http.start(self.settings.host, self.settings.port, context)
        if self.admin_http is not None and self.settings.admin_listen:
            host, port = parse_listen(self.settings.admin_listen)
            self.admin_port = await self.admin_http.start(host, port, context)
        if self.tls is not None:
            self._tls_watch = asyncio.create_task(self.tls.watch(), name="garrison-tls-reload")
        if self.settings.public_url is None and self.state.tokens is not None:
            # No public_url configured: proofs name this listener (its port now known).
            host = self.settings.host
            host = f"[{host}]" if ":" in host else host
            scheme = "https" if self.tls is not None else "http"
            self.state.tokens = dataclasses.replace(
                self.state.tokens, public_url=f"{scheme}://{host}:{self.port}"
            )
        if self.metrics is not None:
            await self.metrics.start()
        self.state.lock_view_at = time.monotonic()  # the snapshot above is fresh
        self._watcher = asyncio.create_task(self._watch(), name="garrison-snapshot-watch")
        self._lease = asyncio.create_task(self._keep_lease(), name="garrison-instance-lease")
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
            if self._emergency_locks:
                locks = snapshot.locks.merged(self._emergency_locks.values())
                snapshot = dataclasses.replace(snapshot, locks=locks)
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
        change = self.clock_guard.observe(now, self._monotonic())
        if change is not ClockChange.NONE:
            await self._clock_changed(change, now)
        if self.clock_guard.paused:
            return  # the wall clock is not to be trusted: expire nothing until it is
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
            await self._integrated()  # recorded before this process enforces it

    async def _integrated(self) -> None:
        """This process's directory changes (in the audit outbox) are in the tree, exported
        and seen by detection before it goes on; if the log is down they wait there."""
        with contextlib.suppress(AuditUnavailable):
            await self.audit.integrate()

    async def _clock_changed(self, change: ClockChange, now: float) -> None:
        skew = round(self.clock_guard.skew, 3)
        if change is ClockChange.JUMPED:
            log.error(
                "WALL CLOCK JUMPED by %.0f s against the monotonic clock: contract expiries "
                "paused until the two agree again for %.0f s (or restart to accept the time)",
                skew,
                CLOCK_AGREE_S,
            )
        else:
            log.warning("wall clock agrees again (skew %.3f s): contract expiries resume", skew)
        name = EventName.CLOCK_JUMPED if change is ClockChange.JUMPED else EventName.CLOCK_AGREED
        self.audit.append_later(
            AuditEvent(name, at=now, actor="contract-clock", data={"skew_s": skew})
        )
        if change is ClockChange.JUMPED and self.monitor is not None:
            finding = Finding(
                rule_id="clock-jump",
                title="The wall clock jumped: contract expiries are paused",
                severity=Severity.HIGH,
                subject_kind="gateway",
                subject_id="clock",
                reason="clock.jumped",
                at=now,
                data={"skew_s": skew},
            )
            await asyncio.to_thread(self.monitor.raise_finding, finding)

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
                cut_covered(self.state, redecide=False)
            except Exception as exc:  # keep watching; the old snapshot stays in force
                log.error("snapshot reload failed: %s", exc)

    async def drain(self, deadline_s: float | None = None) -> int:
        """Stop taking calls and let those in flight finish, for at most ``deadline_s``
        (default: the drain limit); then cut the rest with an error in the API's shape,
        recorded as ``shutdown``. Returns how many were cut."""
        deadline_s = self.state.limits.drain_deadline_s if deadline_s is None else deadline_s
        self.state.draining = True
        self.http.stop_accepting()
        end = time.monotonic() + deadline_s
        # Polled (the live set is the data plane's own; a 50 ms step is nothing at shutdown).
        while self.state.live and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        cut = 0
        for call in list(self.state.live):
            if call.cut is None and call.task is not None:
                call.cut = Cut(Reason.SHUTTING_DOWN)
                call.task.cancel()
                cut += 1
        # The cut calls write their final error event and outcome record, then leave.
        end = time.monotonic() + CUT_SETTLE_S
        # Polled (the live set is the data plane's own; a 50 ms step is nothing at shutdown).
        while self.state.live and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        if cut:
            log.warning("drain deadline passed: cut %d call(s)", cut)
        return cut

    async def check_disk(self) -> None:
        """Read the free space of the database's file system; say so when it runs low."""
        try:
            free = (await asyncio.to_thread(shutil.disk_usage, self._data_dir)).free
        except OSError as exc:
            log.error("cannot read free disk space: %s", exc)
            return
        self.state.disk_free_bytes = free
        low = free < MIN_FREE_BYTES
        if low and not self.state.disk_low:
            log.error(
                "DISK LOW: %d MiB free where the database lives (minimum %d MiB): /readyz "
                "says not ready; free space before the audit log stops",
                free // 2**20,
                MIN_FREE_BYTES // 2**20,
            )
            if self.monitor is not None:
                finding = Finding(
                    rule_id="disk-low",
                    title="Free disk space under the minimum",
                    severity=Severity.HIGH,
                    subject_kind="gateway",
                    subject_id="disk",
                    reason="disk.low",
                    at=self.clock(),
                    data={"free_bytes": free, "minimum_bytes": MIN_FREE_BYTES},
                )
                await asyncio.to_thread(self.monitor.raise_finding, finding)
        elif not low and self.state.disk_low:
            log.warning("disk space back above the minimum (%d MiB free)", free // 2**20)
        self.state.disk_low = low

    async def place_emergency_lock(self, record: dict[str, Any]) -> None:
        """Journal a lock durably and enforce it in this process at once (the database
        cannot be written); it reaches the database and the log when they are back."""
        try:
            await asyncio.to_thread(self.emergency.place, record)
        except (JournalFull, OSError, ValueError) as exc:
            raise AuditUnavailable(f"emergency lock journal: {exc}") from None
        lock = _emergency_lock(record)
        self._enforce_emergency([lock])
        log.error(
            "EMERGENCY LOCK %s placed (%s %s): enforced now", lock.id, lock.kind.value, lock.target
        )

    def _enforce_emergency(self, locks: list[Lock]) -> None:
        for lock in locks:
            self._emergency_locks[lock.id] = lock
        snapshot = self.state.snapshot
        # Swap and cut with no await between (see gateway.containment).
        self.state.snapshot = dataclasses.replace(snapshot, locks=snapshot.locks.merged(locks))
        cut_covered(self.state)

    async def fold_emergency_locks(self) -> int:
        """Write journalled locks into the database and the log; returns how many were
        folded (0 while the database still cannot be written).

        The journal is shared by every process on the data directory: a lock another process
        journalled is enforced here too from the first tick that sees it (the database that
        would carry it is down), and dropped from this process's overlay once it is no longer
        pending (folded by someone, so in the database)."""
        known = set(self._emergency_locks)
        pending = await asyncio.to_thread(self.emergency.pending)
        pending_ids = {record.get("id") for _, record in pending}
        unseen = [
            _emergency_lock(record)
            for _, record in pending
            if record.get("id") not in self._emergency_locks
        ]
        if unseen:
            self._enforce_emergency(unseen)
            log.error(
                "%d emergency lock(s) journalled by another process: enforced now", len(unseen)
            )
        done = {lock_id for lock_id in known if lock_id not in pending_ids}
        folded = 0
        for slot, record in pending:
            directory = Directory(
                self.engine,
                actor=str(record.get("created_by", "garrison")),
                pepper=self.pepper,
                sealer=self.sealer,
            )
            await asyncio.to_thread(adopt_emergency_lock, directory, record, now=self.clock())
            await asyncio.to_thread(self.emergency.clear, slot)
            done.add(str(record["id"]))
            folded += 1
        if done:
            await self._integrated()
            await self.reload()  # the stored locks are in the snapshot now: drop the overlay
            for lock_id in done:
                # Only what is stored: a lock placed since ``pending`` was read stays.
                self._emergency_locks.pop(lock_id, None)
            await self.reload()
        if folded:
            log.warning("%d emergency lock(s) recorded in the database and the audit log", folded)
        return folded

    async def _keep_lease(self) -> None:
        """Renew this instance's lease; give the calls of instances that died an outcome."""
        while True:
            await self.check_disk()
            if self._after_outage.tick(self.audit.healthy, self.audit.depth):
                await asyncio.sleep(0)  # released (gc + malloc_trim, a few ms): yield once
            try:
                await self.fold_emergency_locks()
            except Exception as exc:  # still cannot write: the next tick tries again
                log.error("emergency locks not yet recorded: %s", exc)
            try:
                await asyncio.to_thread(
                    instances.renew,
                    self.engine,
                    self.instance_id,
                    now=self.clock(),
                    lease_s=INSTANCE_LEASE_S,
                )
                await self.end_lapsed_instances()
            except Exception as exc:  # the next tick tries again
                log.error("instance lease upkeep failed: %s", exc)
            await asyncio.sleep(INSTANCE_RENEW_S)

    async def end_lapsed_instances(self, now: float | None = None) -> int:
        """Record ``process_ended`` for every call that a process whose lease lapsed (as of
        ``now``, default the clock) allowed and never finished; returns how many calls."""
        claimed = await asyncio.to_thread(
            instances.claim_lapsed,
            self.engine,
            self.instance_id,
            now=self.clock() if now is None else now,
        )
        ended = 0
        for dead in claimed:
            while True:
                calls = await asyncio.to_thread(instances.unfinished, self.engine, dead)
                for call in calls:
                    await self.audit.append(
                        AuditEvent(
                            EventName.REQUEST_COMPLETED,
                            at=self.clock(),
                            actor="garrison",
                            request_id=call.request_id,
                            principal_id=call.principal_id,
                            credential_id=call.credential_id,
                            model=call.model,
                            data={
                                "endpoint": call.data.get("endpoint"),
                                "client_address": call.data.get("client_address"),
                                "org_id": call.data.get("org_id"),
                                "status": None,
                                "outcome": "process_ended",
                                "reasons": [Reason.PROCESS_ENDED.value],
                                "instance": dead,
                                "recorded_by": self.instance_id,
                            },
                        )
                    )
                ended += len(calls)
                if len(calls) < instances.UNFINISHED_BATCH:
                    break
            log.warning("instance %s ended without stopping: %d call(s) marked", dead, ended)
        return ended

    async def stop(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease
        for watcher in (self._watcher, self._tls_watch):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        await self.http.stop()
        if self.admin_http is not None:
            await self.admin_http.stop()
        if self._settings_tracing:
            await asyncio.to_thread(tracing.disable)  # exports what is queued
        if self.metrics is not None:
            await self.metrics.stop()
        self.state.bodies.stop()
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
        try:
            # Every outcome is written: no other process needs to end our calls for us.
            await asyncio.to_thread(instances.end, self.engine, self.instance_id, now=self.clock())
        except Exception as exc:
            log.error("could not record the clean stop of this instance: %s", exc)
        self._probe.close()
        self.engine.dispose()


async def serve_forever(settings: Settings, on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain and stop cleanly (exit status 0);
    ``on_ready`` gets the bound port once the listener is up."""
    fds = fd_limit.ensure(settings.limits.max_concurrent_requests)
    if fds.max_calls < 1:
        raise ConfigError(
            f"the file descriptor limit ({fds.soft}) leaves no room for calls beside the "
            f"reserve of {fd_limit.FD_RESERVE}: raise it (ulimit -n, LimitNOFILE=)"
        )
    if fds.max_calls < settings.limits.max_concurrent_requests:
        limits = dataclasses.replace(settings.limits, max_concurrent_requests=fds.max_calls)
        settings = dataclasses.replace(settings, limits=limits)
    gateway = Gateway(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the listener opens: a signal that arrives while starting still drains cleanly.
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    try:
        await gateway.start()
        scheme = "https" if gateway.tls is not None else "http"
        log.info("garrison listening on %s://%s:%d", scheme, settings.host, gateway.port)
        if gateway.admin_http is not None:
            log.info("admin API on its own listener: %s://%s", scheme, settings.admin_listen)
        if on_ready is not None:
            on_ready(gateway.port)
        await stopping.wait()
        log.warning("stop signal: draining %d call(s) in flight", len(gateway.state.live))
        await gateway.drain()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await gateway.stop()


def _emergency_lock(record: dict[str, Any]) -> Lock:
    """The lock a journal record holds, as the data plane enforces it."""
    kind = LockKind(record["kind"])
    return Lock(
        id=record["id"],
        kind=kind,
        target=record["target"],
        reason=record["reason"],
        created_by=record["created_by"],
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        network=parse_network(record["target"]) if kind is LockKind.NETWORK else None,
    )


def _signin(settings: Settings, tokens: TokenAuth | None) -> Any:
    """Sign-in through [identity.oidc]; it signs with this process's token keys and checks
    proofs against its public URL and jti cache (``state.tokens``)."""
    from garrison.admin.session_api import build_signin

    if tokens is None:
        raise ConfigError("[identity.oidc] needs the token keys (token.keys) of this process")
    return build_signin(settings.oidc)
