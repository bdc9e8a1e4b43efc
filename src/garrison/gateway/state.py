"""What one gateway process holds: the current snapshot, keys, audit log and HTTP client."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from garrison.audit import AuditLog
from garrison.domain import Network
from garrison.gateway.limits import GatewayLimits
from garrison.keyring import Sealer
from garrison.store.snapshot import Snapshot


@dataclass(slots=True)
class GatewayState:
    snapshot: Snapshot
    pepper: bytes = field(repr=False)
    audit: AuditLog
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    trusted_proxies: tuple[Network, ...] = ()
    clock: Callable[[], float] = time.time
    session: aiohttp.ClientSession | None = None
    audit_fail_open: bool = False
    # Encrypts request bodies for the optional capture; None: bodies are not kept.
    capture: Sealer | None = None
    inflight: int = 0
    calls: int = 0
