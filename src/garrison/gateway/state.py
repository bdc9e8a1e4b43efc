"""What one gateway process holds: the current snapshot, keys, audit log and HTTP client."""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from garrison.audit.writer import AuditLog
from garrison.detect.patterns import Matcher
from garrison.domain import Network
from garrison.edge.client_address import ForwardedHeader
from garrison.gateway.admission_limits import Admission
from garrison.gateway.answers import ResponseBudget
from garrison.gateway.body_work import BodyWork
from garrison.gateway.limits import GatewayLimits
from garrison.histograms import Histogram
from garrison.identity.token_auth import TokenAuth
from garrison.keyring import Sealer
from garrison.policy.context import DEFAULT_IDENTITY_POLICY, IdentityPolicy
from garrison.policy.engine import PolicyEngine
from garrison.shared.verdicts import SharedLimits
from garrison.store.snapshot import Snapshot
from garrison.tls.upstream import UpstreamTlsContexts


@dataclass(slots=True)
class Latency:
    """Per-call latency histograms (seconds), read by /metrics."""

    duration: Histogram = field(default_factory=Histogram)  # the whole call, as the client sees
    ttfb: Histogram = field(default_factory=Histogram)  # to the first byte sent to the client
    added: Histogram = field(default_factory=Histogram)  # the gateway's own work before forwarding
    upstream: Histogram = field(default_factory=Histogram)  # from forwarding to the call's end


class StaleMode(enum.StrEnum):
    """What a process refuses when its view of the locks is stale."""

    RESTRICTED = "restricted"  # calls to restricted and critical models (the default)
    ALL = "all"  # every call
    OPEN = "open"  # nothing (logs loudly): availability over containment


@dataclass(slots=True)
class GatewayState:
    snapshot: Snapshot
    pepper: bytes = field(repr=False)
    audit: AuditLog
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    trusted_proxies: tuple[Network, ...] = ()
    # Which header those proxies append the client's address to (the other is ignored).
    forwarded_header: ForwardedHeader = ForwardedHeader.X_FORWARDED_FOR
    clock: Callable[[], float] = time.time
    session: aiohttp.ClientSession | None = None
    # One SSL context per distinct per-model upstream TLS setting (gateway.upstream_tls).
    upstream_tls: UpstreamTlsContexts = field(default_factory=UpstreamTlsContexts)
    audit_fail_open: bool = False
    # Encrypts request bodies for the optional capture; None: bodies are not kept.
    capture: Sealer | None = None
    inflight: int = 0
    # Set when the process is stopping: new calls are refused (503), live ones may finish.
    draining: bool = False
    latency: Latency = field(default_factory=Latency)
    # (model, outcome) → calls, kept only when an admin opted in to per-model labels (model
    # names of restricted models are themselves sensitive).
    model_outcomes: Counter[tuple[str, str]] | None = None
    # Free space where the database lives is under MIN_FREE_BYTES (checked by the watcher).
    disk_low: bool = False
    disk_free_bytes: int = -1
    calls: int = 0
    # Per-credential and per-principal slots and buffered body bytes (after authentication).
    admission: Admission = field(default_factory=Admission)
    # The same limits over every replica ([storage] redis_url), checked after this
    # process's own; None: this process's limits only (garrison.gateway.shared_admission).
    shared: SharedLimits | None = None
    # Calls admitted (or refused) without the shared limits because Redis was down.
    shared_fallbacks: int = 0
    # Where large request bodies are parsed, scanned and re-encoded (worker processes).
    bodies: BodyWork = field(default_factory=BodyWork)
    # Bytes of non-streamed upstream answers held now (answers.py).
    answers: ResponseBudget = field(default_factory=ResponseBudget)
    # Calls past authentication, for cutting when a lock covers them (see containment).
    live: set[Any] = field(default_factory=set)
    # When this process last read the directory's version (monotonic), and what it does when
    # that is older than limits.lock_view_stale_s.
    lock_view_at: float = field(default_factory=time.monotonic)
    stale_mode: StaleMode = StaleMode.RESTRICTED
    # The policy engine for the current snapshot and policy set (swapped with the snapshot).
    policy: PolicyEngine | None = None
    # Content rules scanned over prompts in flight: (rule id, compiled pattern); set by the
    # detection service whenever its rules load. Only matches are recorded, never the text.
    content_rules: tuple[tuple[str, Matcher], ...] = ()
    # DPoP-bound sign-in tokens (None: this process takes API keys only), and the
    # [identity] settings every decision uses.
    tokens: TokenAuth | None = None
    identity_policy: IdentityPolicy = DEFAULT_IDENTITY_POLICY
    # The event loop serving this state's apps, set by their start-up (``app.build_app``):
    # each ``asyncio.get_running_loop()`` is a getpid() system call on Python 3.11.
    loop: asyncio.AbstractEventLoop | None = None
    # Counters for /metrics (cheap dict increments on the hot path).
    refusals: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def data_url(self) -> str | None:
        """The data plane's public URL (``[identity] public_url``, else this listener's own
        address once it is known): where a signed-in session calls models."""
        return self.tokens.public_url if self.tokens is not None else None
