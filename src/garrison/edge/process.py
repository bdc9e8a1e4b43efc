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
from garrison.domain import Network
from garrison.domain.snapshot import Snapshot
from garrison.edge.client_address import ForwardedHeader
from garrison.edge.request import BodyLimits, EdgeSettings
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

    @property
    def data_url(self) -> str | None:
        """The data plane's public URL (where a session calls models); None: no tokens."""
        ...


class ListenerProcess:
    """The process as the admin API on its own listener sees it: everything is the
    process's, but sign-in tokens are checked against that listener's own URL
    (``[admin] public_url``), so a DPoP proof made for the data listener is refused on the
    admin listener and the other way round. Tokens, keys and the replay cache are shared."""

    def __init__(self, process: ProcessState, tokens: TokenAuth | None) -> None:
        self._process = process
        self.tokens = tokens

    @property
    def snapshot(self) -> Snapshot:
        return self._process.snapshot

    @property
    def audit(self) -> AuditDoor:
        return self._process.audit

    @property
    def clock(self) -> Callable[[], float]:
        return self._process.clock

    @property
    def pepper(self) -> bytes:
        return self._process.pepper

    @property
    def policy(self) -> PolicyEngine | None:
        return self._process.policy

    @property
    def data_url(self) -> str | None:
        return self._process.data_url

    @property
    def trusted_proxies(self) -> tuple[Network, ...]:
        return self._process.trusted_proxies

    @property
    def forwarded_header(self) -> ForwardedHeader:
        return self._process.forwarded_header

    @property
    def limits(self) -> BodyLimits:
        return self._process.limits
