"""The narrow view of the running process the admin plane reads: the snapshot in force, the
audit log's front door, the clock, the key pepper, the policy engine and the sign-in token
keys, plus what the shared edge reads (trusted proxies, body limits).

The data plane's ``GatewayState`` satisfies it (checked by mypy where the composition root
hands the state to the admin plane); the admin plane never sees the rest of it (live calls,
upstream pool, admission counters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from garrison.audit import AuditEvent
from garrison.domain.snapshot import Snapshot
from garrison.edge.request import EdgeSettings
from garrison.identity.token_auth import TokenAuth
from garrison.policy.engine import PolicyEngine


class AuditDoor(Protocol):
    """The audit log's front door, as a handler uses it."""

    async def append(self, event: AuditEvent) -> None:
        """Return once ``event`` is durable (``AuditUnavailable`` if it cannot be)."""

    def append_later(self, event: AuditEvent) -> None:
        """Queue ``event`` (``AuditUnavailable`` if the queue is full)."""

    async def integrate(self) -> None:
        """Return once the outbox's waiting rows are in the tree."""


class ProcessState(EdgeSettings, Protocol):
    """What an admin handler may read of the process (all read-only here)."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def audit(self) -> AuditDoor: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def pepper(self) -> bytes: ...

    @property
    def policy(self) -> PolicyEngine | None: ...

    @property
    def tokens(self) -> TokenAuth | None: ...
