"""The composition root: one Garrison process. Opens the store, loads the snapshot, starts
the audit writer, the snapshot watcher, the upstream client pool, detection, and both planes
(the data plane of ``garrison.gateway`` and the admin API of ``garrison.admin``, which never
import each other: the admin routes are mounted here, on the process state seen through
``garrison.edge.process.ProcessState``) on their listeners; stops them in reverse.

The moving parts it wires live in ``garrison.serve``: the snapshot keeper, its watcher and
the contract clock (``snapshots``), the emergency lock overlay (``emergency``), the instance
lease and dead processes' calls (``upkeep``), draining (``drain``), and the factories of the
smaller parts (``wiring``). Nothing below imports this module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from garrison.admin.api import AdminBackend, add_admin_routes
from garrison.audit import AuditEvent
from garrison.audit.checkpoint import Signer, public_b64
from garrison.audit.exporters import build_exporters, parse_syslog_address
from garrison.audit.payloads_host import GatewayStarted, GatewayStopped
from garrison.audit.sinks import open_sink
from garrison.audit.witness import DirectoryWitness
from garrison.audit.writer import AuditLog
from garrison.config import Settings
from garrison.detect.observation import Severity
from garrison.detect.rules import RuleSet
from garrison.domain.networks import parse_listen
from garrison.edge.process import ListenerProcess
from garrison.edge.request_ids import new_request_id
from garrison.errors import ConfigError
from garrison.gateway import fd_limit, tracing
from garrison.gateway.app import build_app
from garrison.gateway.body_work import BodyWork
from garrison.gateway.http_server import HttpServer
from garrison.gateway.state import GatewayState
from garrison.identity.access_tokens import TokenSigner
from garrison.identity.dpop import MemoryReplayCache
from garrison.identity.token_auth import TokenAuth
from garrison.keyring import CAPTURE_FILE, Sealer, load_pepper
from garrison.metrics import render
from garrison.metrics_listener import MetricsListener
from garrison.respond.monitor import Monitor
from garrison.respond.sinks import JsonlSink, Sink, SyslogSink, WebhookSink
from garrison.serve.drain import drain
from garrison.serve.emergency import EmergencyLocks
from garrison.serve.snapshots import Snapshots
from garrison.serve.upkeep import Upkeep
from garrison.serve.wiring import build_signin, change_listener, data_dir, shared_backends, with_url
from garrison.store import is_postgres, make_engine, migrate, sqlite_path
from garrison.store.change_feed import version_probe
from garrison.store.directory import Directory
from garrison.store.emergency_locks import JOURNAL_FILE, EmergencyJournal
from garrison.store.snapshot import Snapshot
from garrison.tls.listener import ReloadingTls

log = logging.getLogger("garrison.gateway")

# Young-generation GC runs every 10,000 net allocations instead of 700: a call allocates a
# few hundred short-lived objects, and collecting every couple of calls cost ~5 % of the loop.
GC_THRESHOLDS = (10_000, 20, 20)
# Idle upstream connections kept per process (reused across calls to the same server).
UPSTREAM_KEEPALIVE_S = 30.0
# The signals a process manager stops a service with (systemd, Kubernetes, `docker stop`
# send SIGTERM; a terminal sends SIGINT): both drain, then stop with exit status 0.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
        path = sqlite_path(settings.database_url)
        if path is None and not is_postgres(settings.database_url):
            raise ConfigError("[storage] database_url: SQLite or PostgreSQL (postgresql+psycopg)")
        self.engine = make_engine(settings.database_url)
        self.pepper = load_pepper(settings.key_dir)
        self.sealer = Sealer.from_dir(settings.key_dir)
        self.signer = Signer.from_dir(settings.key_dir)
        witness = DirectoryWitness(settings.witness_dir) if settings.witness_dir else None
        try:
            exporters = build_exporters(settings.audit_jsonl, settings.audit_syslog)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.sink = open_sink(
            settings.database_url,
            signer=self.signer,
            witness=witness,
            exporters=exporters,
            clock=clock,
        )
        self.audit = AuditLog(self.sink, clock=clock)
        # [storage] redis_url: limits and replay caches shared by every replica.
        self.shared = shared_backends(settings)
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
                replay=MemoryReplayCache() if self.shared is None else self.shared.jti,
                public_url=settings.token_public_url,
                local_replay=None if self.shared is None else MemoryReplayCache(),
            ),
            identity_policy=settings.identity_policy,
            shared=None if self.shared is None else self.shared.limits,
        )
        if settings.audit_fail_open:
            log.warning(
                "AUDIT FAIL-OPEN IS ON: calls will be forwarded even when the audit log "
                "cannot record them"
            )
        self.emergency = EmergencyLocks(
            self.state,
            EmergencyJournal(data_dir(settings) / JOURNAL_FILE),
            engine=self.engine,
            pepper=self.pepper,
            sealer=self.sealer,
            audit=self.audit,
            clock=clock,
            reload=self.reload,
        )
        admin = AdminBackend(
            emergency_lock=self.emergency.place,
            engine=self.engine,
            pepper=self.pepper,
            sealer=self.sealer,
            reload=self.reload,
            database_url=settings.database_url,
            public_keys={kid: public_b64(k) for kid, k in self.signer.public_keys().items()},
        )
        if settings.oidc.enabled:
            signin = build_signin(settings, self.state.tokens)
            if self.shared is not None:
                shared = self.shared
                signin = dataclasses.replace(
                    signin, seen=shared.id_tokens, limiter=shared.signin_attempts
                )
            admin = dataclasses.replace(admin, signin=signin)
        if self.shared is not None:
            admin = dataclasses.replace(admin, enroll_limiter=self.shared.enroll_attempts)
        self.monitor = self._monitor(settings) if settings.detect_enabled else None
        if self.monitor is not None:
            self.sink.add_listener(self.monitor.observe)
            admin = dataclasses.replace(admin, monitor=self.monitor)
        admin = dataclasses.replace(admin, metrics=lambda: render(self.state, self.monitor))
        # The admin API on the data listener, or (``[admin] listen``) on its own only.
        apart = settings.admin_listen is not None
        # The admin plane reads this process through its narrow view (ProcessState); on its
        # own listener (or at its own public URL) DPoP proofs name that URL, not the data
        # plane's (the URL is set in start() when it is the listener's own port).
        self.admin_process = (
            ListenerProcess(self.state, with_url(self.state.tokens, settings.admin_public_url))
            if apart or settings.admin_public_url is not None
            else None
        )
        mount_admin = functools.partial(
            add_admin_routes, backend=admin, process=self.admin_process or self.state
        )
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
            ReloadingTls(
                settings.tls_cert_file,
                settings.tls_key_file,
                client_ca=settings.tls_client_ca_file,
            )
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._probe = version_probe(settings.database_url)
        self.snapshots = Snapshots(
            self.state,
            engine=self.engine,
            pepper=self.pepper,
            sealer=self.sealer,
            probe=self._probe,
            listener=change_listener(settings.database_url),
            overlay=self.emergency.overlay,
            monitor=self.monitor,
            clock=clock,
            monotonic=monotonic,
        )
        self.upkeep = Upkeep(
            self.state,
            engine=self.engine,
            audit=self.audit,
            emergency=self.emergency,
            monitor=self.monitor,
            instance_id=self.instance_id,
            data_dir=data_dir(settings),
            clock=clock,
        )
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
            directory_for=directory_for,
            facts=lambda: self.state.snapshot,
            after_write=self._reload_soon,
            rules_path=settings.rules_path,
            sinks=sinks,
            min_severity=Severity.parse(settings.alerts_min_severity),
            on_rules=on_rules,
            clock=self.clock,
            # This gateway among those sharing the database (two in one process differ).
            worker_id=f"{new_request_id.prefix}/{secrets.token_hex(4)}",
        )

    def _reload_soon(self) -> None:
        """From another thread: load the new snapshot on the event loop (a playbook locked)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self._tasks.add(asyncio.ensure_future(self.reload())))

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        migrate(self.engine)
        await asyncio.to_thread(self.emergency.journal.preallocate)
        await asyncio.to_thread(self.upkeep.register)
        self.state.snapshot, self.state.policy = await asyncio.to_thread(self.snapshots.load)
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
        if self.shared is not None:
            await self.shared.start()
        context = self.tls.context if self.tls is not None else None
        self.port = await self.http.start(self.settings.host, self.settings.port, context)
        if self.admin_http is not None and self.settings.admin_listen:
            host, port = parse_listen(self.settings.admin_listen)
            self.admin_port = await self.admin_http.start(host, port, context)
            if self.admin_process is not None and self.settings.admin_public_url is None:
                self.admin_process.tokens = with_url(
                    self.state.tokens, self._own_url(host, self.admin_port)
                )
        if self.tls is not None:
            self._tls_watch = asyncio.create_task(self.tls.watch(), name="garrison-tls-reload")
        if self.settings.public_url is None and self.state.tokens is not None:
            # No public_url configured: proofs name this listener (its port now known).
            self.state.tokens = with_url(
                self.state.tokens, self._own_url(self.settings.host, self.port)
            )
        if self.metrics is not None:
            await self.metrics.start()
        self.state.lock_view_at = time.monotonic()  # the snapshot above is fresh
        self._watcher = asyncio.create_task(self.snapshots.watch(), name="garrison-snapshot-watch")
        self._lease = asyncio.create_task(self.upkeep.keep_lease(), name="garrison-instance-lease")
        # Everything built so far lives as long as the process: keep it out of GC passes.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        started = GatewayStarted(
            host=self.settings.host,
            port=self.port,
            snapshot_version=self.state.snapshot.version,
        )
        await self.audit.append(
            AuditEvent(
                started.NAME,
                at=self.clock(),
                actor="garrison",
                data=started.as_data(),
                payload=started,
            )
        )
        return self.port

    def _own_url(self, host: str, port: int) -> str:
        """The URL of a listener of this process, as a client connecting to it names it."""
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{port}"

    async def reload(self) -> None:
        """Load the newest snapshot into this process (after a write, or a playbook's).
        When the database cannot be read (PostgreSQL lost right after the write, or an
        emergency lock placed because it is lost) the snapshot in force stays, emergency
        locks included, and the watcher loads the new one as soon as it can."""
        try:
            await self.snapshots.reload()
        except sa.exc.OperationalError as exc:
            # The driver's message (no statement, no parameters).
            log.error("snapshot not reloaded, the database cannot be read: %s", exc.orig)

    async def drain(self, deadline_s: float | None = None) -> int:
        """Stop taking calls and let those in flight finish, for at most ``deadline_s``
        (default: the drain limit); then cut the rest with an error in the API's shape,
        recorded as ``shutdown``. Returns how many were cut."""
        deadline_s = self.state.limits.drain_deadline_s if deadline_s is None else deadline_s
        return await drain(self.state, self.http, deadline_s)

    async def check_disk(self) -> None:
        await self.upkeep.check_disk()

    async def end_lapsed_instances(self, now: float | None = None) -> int:
        return await self.upkeep.end_lapsed_instances(now)

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
        if self.shared is not None:
            await self.shared.close()  # after the listener: every lease is given back
        with contextlib.suppress(Exception):
            stopped = GatewayStopped(calls=self.state.calls)
            self.audit.append_later(
                AuditEvent(
                    stopped.NAME,
                    at=self.clock(),
                    actor="garrison",
                    data=stopped.as_data(),
                    payload=stopped,
                )
            )
        await asyncio.to_thread(self.audit.close)
        try:
            # Every outcome is written: no other process needs to end our calls for us.
            await asyncio.to_thread(self.upkeep.end)
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
