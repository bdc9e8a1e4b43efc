"""What every admin API handler works with: the backend, the view of the process
(``garrison.edge.process.ProcessState``), the call context, the route."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel

from garrison.admin.authz import Action, authorize, reach
from garrison.domain import Credential, Principal, Reason
from garrison.domain.snapshot import Snapshot
from garrison.edge.process import ProcessState
from garrison.errors import BadRequest, Forbidden, GarrisonError, NotFound
from garrison.identity.access_tokens import SessionClaims
from garrison.keyring import Sealer
from garrison.store import Directory, queries

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class AdminBackend:
    """What the admin API needs beyond the process's state: the store and the key files."""

    engine: sa.Engine
    pepper: bytes = field(repr=False)
    sealer: Sealer = field(repr=False)
    # Loads the newest snapshot into this process (called after every write).
    reload: Callable[[], Awaitable[None]]
    # For evidence bundles: the audit log's database file and the checkpoint public keys.
    # The audit log's database (SQLite or PostgreSQL): incident evidence reads it.
    database_url: str | None = None
    public_keys: Mapping[str, str] = field(default_factory=dict)
    # The detection service (for /metrics and alert figures); None when detection is off.
    monitor: Any = None
    # Places a lock through the emergency journal when the database cannot be written.
    emergency_lock: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    # Sign-in through identity providers (garrison.admin.session_api.SignIn); None: off.
    signin: Any = None
    # The process's metrics in the Prometheus text format (``/metrics``); None: not served.
    metrics: Callable[[], bytes] | None = None
    # The enrollment endpoint's attempt limiter shared by every replica
    # (garrison.shared.redis_replay.SharedAttemptLimiter); None: this process's own.
    enroll_limiter: Any = None


BACKEND_KEY = web.AppKey("garrison_admin", AdminBackend)
# The running process as the admin plane sees it (the composition root puts it here).
PROCESS_KEY: web.AppKey[ProcessState] = web.AppKey("garrison_admin_process")


class Refused(Exception):
    def __init__(self, reason: Reason, error: GarrisonError) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.error = error


@dataclass(slots=True)
class Ctx:
    """One admin call: who, from where, and the means to read, write and authorise."""

    request: web.Request
    state: ProcessState
    backend: AdminBackend
    request_id: str
    admin: Principal
    credential_id: str
    address: str
    scope: frozenset[str]
    body: Any = None
    # The credential this call was made with (its provenance decides what it may approve).
    credential: Credential | None = None
    # The sign-in token's claims when the call came with one (then ``credential`` is None
    # and ``credential_id`` is the session id): MFA and its time, for fresh-MFA checks.
    session: SessionClaims | None = None
    wrote: bool = False
    attempted: bool = False
    # A handler may answer with another status than its route's (202 for a proposal).
    status: int | None = None

    @property
    def now(self) -> float:
        return self.state.clock()

    def origin(self) -> dict[str, Any]:
        return {
            "via": "admin-api",
            "admin": self.admin.name,
            "credential_id": self.credential_id,
            "client_address": self.address,
            "request_id": self.request_id,
        }

    def directory(self) -> Directory:
        return Directory(
            self.backend.engine,
            actor=self.admin.id,
            pepper=self.backend.pepper,
            sealer=self.backend.sealer,
            origin=self.origin(),
        )

    async def write(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        self.attempted = True
        result = await asyncio.to_thread(fn, *args, **kw)
        # A change that changed nothing ({}) wrote no event: the dispatcher records the call.
        self.wrote = result != {}
        return result

    async def read(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        def run() -> T:
            with self.backend.engine.connect() as conn:
                return fn(conn, *args, **kw)

        return await asyncio.to_thread(run)

    def reads_over(self, action: Action = Action.READ) -> frozenset[str] | None:
        """The orgs this admin may read (None: all)."""
        return reach(self.admin, action, self.scope).orgs

    async def require(
        self,
        action: Action,
        kind: str | None = None,
        ref: str | None = None,
        *,
        offline: bool = False,
    ) -> None:
        """Refuse unless the admin may take ``action`` on the ``kind`` named ``ref``.
        ``offline``: when the database cannot be read (PostgreSQL lost), the target is
        looked up in the snapshot this process holds (an emergency lock must still be
        placed, and authorised)."""
        target_org = None
        target_principal = None
        if kind is not None and ref is not None:
            try:
                target_org = await self.read(queries.org_of, kind, ref)
                if kind == "principal":
                    target_principal = await self.read(_principal_id, ref)
            except sa.exc.OperationalError:
                if not offline:
                    raise
                target_org, target_principal = snapshot_target(self.state.snapshot, kind, ref)
        decision = authorize(
            self.admin,
            action,
            self.scope,
            target_org=target_org,
            target_principal=target_principal,
        )
        if decision.allowed:
            return
        if decision.reason is Reason.ADMIN_SCOPE:
            what = {"org": "vendor", "credential": "key"}.get(kind or "", kind or "object")
            raise Refused(
                decision.reason,
                NotFound(f"no {what} {ref!r}", public_message=f"No {what} {ref!r}."),
            )
        if decision.reason is Reason.ADMIN_SELF:
            raise Refused(
                decision.reason,
                Forbidden("an admin cannot change their own access", rule="no-self-change"),
            )
        raise Refused(decision.reason, Forbidden(f"your roles do not allow {action.value}"))


# What a yes/no query parameter may say (the OpenAPI document types it as a boolean).
_FLAG_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
FLAG_SCHEMA: dict[str, Any] = {"type": "boolean"}


def query_flag(ctx: Ctx, name: str) -> bool:
    """A yes/no query parameter (absent: no); any other word is refused, not read as no."""
    text = ctx.request.query.get(name)
    if text is None or text == "":
        return False
    try:
        return _FLAG_WORDS[text.lower()]
    except KeyError:
        raise BadRequest(f"query parameter {name} must be true or false") from None


def snapshot_target(snap: Snapshot, kind: str, ref: str) -> tuple[str | None, str | None]:
    """``queries.org_of`` and the principal's id, answered from a snapshot."""
    principal = None
    if kind == "org":
        org = next((o for o in snap.orgs.values() if ref in (o.id, o.name)), None)
        return (org.id if org is not None else None), None
    if kind == "credential":
        cred = snap.credentials.get(ref)
        principal = snap.principals.get(cred.principal_id) if cred is not None else None
    elif kind == "principal":
        principal = next((p for p in snap.principals.values() if ref in (p.id, p.name)), None)
    if principal is None:
        return None, None
    return principal.org_id, (principal.id if kind == "principal" else None)


def _principal_id(conn: sa.Connection, ref: str) -> str | None:
    p = queries.p
    value = conn.execute(sa.select(p.c.id).where(sa.or_(p.c.id == ref, p.c.name == ref))).scalar()
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    summary: str
    handler: Callable[[Ctx], Awaitable[Any]]
    # Checked before anything else (None: any admin role); handlers check targets.
    action: Action | None = None
    body: type[BaseModel] | None = None
    status: int = 200
    # (name, description) or (name, description, JSON Schema); a plain pair is a string.
    query: tuple[tuple[str, str] | tuple[str, str, dict[str, Any]], ...] = ()
    tag: str = "directory"
    # Open to any authenticated principal (asking for access, one's own requests), not
    # only to admins; the handler limits what each caller sees.
    open_to_all: bool = False
    # Reads are audit events (admin.read) except where that would only be noise (scrapes).
    audit_reads: bool = True
