"""Approvers learn that something waits for them: access requests and two-person changes go
out through the alert sinks (webhook, JSON lines, syslog) as their own event kinds.

    approval.requested   a request or a proposal now waits for a decision
    approval.approved    an approval was given (``waiting`` true: more approvals needed)
    approval.rejected    denied by an approver or a second admin
    approval.cancelled   withdrawn by the requester
    approval.expired     nobody decided in time

Items are access requests (``access``), two-person changes (``change``) and requests to lift
a global lockdown (``lock-lift``).

The source is the audit log itself: a watcher thread tails ``audit_events`` (admin API and
CLI writes reach the database directly, never the gateway's writer), through SQLAlchemy, so
the same watcher reads SQLite and PostgreSQL; every process that
writes a request is covered and nothing is announced that was not committed. A notice is
built from an allow-list of fields of the audit record, which never holds a secret; the
proposal's summary is the one free text passed on, with any credentials in URLs cut out (a
model proposal's sealed upstream credential lives only in ``pending_changes.payload``, which
this module never reads). Change proposals lapse without an audit event, so the watcher
keeps the deadlines of what it saw proposed and announces the lapse itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads import payload_of
from garrison.audit.payloads_access import (
    AccessApproved,
    AccessCancelled,
    AccessDenied,
    AccessExpired,
    AccessRequested,
)
from garrison.audit.payloads_admin import ChangeDecided, ChangeProposed
from garrison.audit.payloads_respond import LockLifted, LockLiftRequested
from garrison.domain.access import ACCESS_REQUEST_TTL_S
from garrison.respond.sinks import Sink
from garrison.store.changes import CHANGE_TTL_S
from garrison.store.locks import LIFT_REQUEST_TTL_S
from garrison.timestamps import rfc3339

log = logging.getLogger("garrison.approvals")

# How often the watcher looks for new audit rows: an approver hears within about this long.
APPROVAL_POLL_S = 1.0
# Audit rows read per poll (a burst larger than this is read over several polls).
APPROVAL_BATCH = 500
# Deadlines of pending items remembered for the lapse announcement: far above any real
# backlog of open proposals; past it the oldest are forgotten (and their lapse not announced).
APPROVAL_TRACKED_MAX = 10_000
# A proposal's summary as passed on (the store keeps 500 characters).
SUMMARY_MAX = 500

REQUESTED = "approval.requested"
APPROVED = "approval.approved"
REJECTED = "approval.rejected"
CANCELLED = "approval.cancelled"
EXPIRED = "approval.expired"
KINDS = (REQUESTED, APPROVED, REJECTED, CANCELLED, EXPIRED)

# Audit event names the watcher reads (plus any event applying a change: see ``notice_for``).
_ACCESS = {
    "access.requested": REQUESTED,
    "access.approved": APPROVED,
    "access.denied": REJECTED,
    "access.cancelled": CANCELLED,
    "access.expired": EXPIRED,
}
_ACCESS_PAYLOADS = (AccessRequested, AccessApproved, AccessDenied, AccessCancelled, AccessExpired)
_CHANGE = {
    "change.proposed": REQUESTED,
    "change.approved": APPROVED,
    "change.denied": REJECTED,
}
_LOCK_LIFT = {"lock.lift_requested": REQUESTED, "lock.lifted": APPROVED}
# How long each kind of item waits before it lapses.
_TTL = {"access": ACCESS_REQUEST_TTL_S, "change": CHANGE_TTL_S, "lock-lift": LIFT_REQUEST_TTL_S}
# Events of model calls, never about approvals (skipped without being read).
DATA_PLANE_EVENTS = ("request.allowed", "request.denied", "request.completed", "admin.read")
_POLL_SQL = sa.text(
    "SELECT seq, record FROM audit_events WHERE seq > :low AND seq <= :high "
    "AND name NOT IN :skip ORDER BY seq LIMIT :batch"
).bindparams(sa.bindparam("skip", expanding=True))
_HIGH_SQL = sa.text("SELECT coalesce(max(seq), 0) FROM audit_events")
_NAMES_SQL = sa.text("SELECT id, name FROM principals WHERE id IN :ids").bindparams(
    sa.bindparam("ids", expanding=True)
)
# ``user:password@`` and query strings in URLs: where a credential in a URL would sit.
_URL_SECRETS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]*@|\?[^\s]*")


def scrub_summary(text: str) -> str:
    """A proposal's summary without URL credentials or query strings."""

    def cut(match: re.Match[str]) -> str:
        return match.group("scheme") or "?…"

    return _URL_SECRETS.sub(cut, text)[:SUMMARY_MAX]


def notice_for(record: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any] | None:
    """The notice an audit record makes for approvers, or None. ``names``: principal id to
    name, for the people it names."""
    name = str(record.get("name", ""))
    data = record.get("data") or {}
    if not isinstance(data, dict):
        return None
    actor = record.get("actor")
    at = float(record.get("at") or 0.0)
    item: dict[str, Any]
    kind = _ACCESS.get(name)
    if kind is not None:
        asked = payload_of(name, data)
        if not isinstance(asked, _ACCESS_PAYLOADS) or not isinstance(asked.request_id, str):
            return None
        item = {"type": "access", "id": asked.request_id}
        principal = record.get("principal_id")
        if isinstance(principal, str):
            item["principal"] = _person(principal, names)
        if record.get("model") is not None:
            item["model"] = str(record["model"])
        if isinstance(asked, AccessRequested):
            item["duration_s"] = asked.duration_s
            item["reason"] = str(asked.reason)[:SUMMARY_MAX]
            item["approvals_needed"] = asked.approvals_needed
        if isinstance(asked, AccessDenied):
            item["reason"] = str(asked.reason)[:SUMMARY_MAX]
        waiting = isinstance(asked, AccessRequested) or (
            isinstance(asked, AccessApproved) and not asked.complete
        )
        if isinstance(asked, AccessApproved):
            item["approvals"] = len(asked.approvals or [])
    elif name in _LOCK_LIFT:
        # Lifting a global lockdown takes two admins: the request, then the lift by another.
        lift = payload_of(name, data)
        if not isinstance(lift, LockLiftRequested | LockLifted) or not isinstance(
            lift.lock_id, str
        ):
            return None
        if isinstance(lift, LockLifted) and lift.requested_by is ABSENT:
            return None  # not a lockdown's: nobody else was waiting on it
        kind = _LOCK_LIFT[name]
        item = {"type": "lock-lift", "id": lift.lock_id, "kind": str(lift.kind)}
        item["reason"] = str(lift.reason)[:SUMMARY_MAX]
        waiting = name == "lock.lift_requested"
    else:
        kind = _CHANGE.get(name)
        origin = data.get("origin")  # the journal's, beside the payload's keys
        applied = isinstance(origin, dict) and isinstance(origin.get("change_id"), str)
        if kind is None and not applied:
            return None
        decided: ChangeProposed | ChangeDecided | None = None
        if kind is None:  # an event that applied an approved change
            kind = APPROVED
            change_id = origin["change_id"]  # type: ignore[index]
        else:
            found = payload_of(name, data)
            if not isinstance(found, ChangeProposed | ChangeDecided):
                return None
            decided, change_id = found, found.change_id
        if not isinstance(change_id, str):
            return None
        item = {"type": "change", "id": change_id}
        if decided is not None:
            # The change's own kind and target (an event applying one names neither: its
            # ``kind``, if any, is the thing it made, not the change).
            for field, value in (("kind", decided.kind), ("target", decided.target)):
                if isinstance(value, str):
                    item[field] = value
        if isinstance(decided, ChangeProposed):
            item["summary"] = scrub_summary(str(decided.summary))
        waiting = isinstance(decided, ChangeProposed)
    notice: dict[str, Any] = {
        "kind": kind,
        "item": item,
        "by": _person(actor, names) if isinstance(actor, str) else None,
        "at": rfc3339(at),
        "waiting": waiting,
    }
    if isinstance(record.get("i"), int):
        notice["audit_index"] = record["i"]
    if kind == REQUESTED:
        notice["expires_at"] = rfc3339(at + _TTL[item["type"]])
    return notice


def _person(principal_id: str, names: Mapping[str, str]) -> dict[str, str]:
    found = names.get(principal_id)
    return {"id": principal_id, "name": found} if found else {"id": principal_id}


class Deadlines:
    """Pending items and when they lapse (bounded); ``due`` hands back the lapsed ones once."""

    def __init__(self, limit: int = APPROVAL_TRACKED_MAX) -> None:
        self._limit = limit
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def track(self, item_id: str, expires_at: float, item: dict[str, Any]) -> None:
        self._items[item_id] = (expires_at, item)
        self._items.move_to_end(item_id)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def settle(self, item_id: str) -> bool:
        """Forget a decided item; True if it was still tracked."""
        return self._items.pop(item_id, None) is not None

    def due(self, now: float) -> list[tuple[float, dict[str, Any]]]:
        lapsed = [(k, v) for k, v in self._items.items() if v[0] <= now]
        for key, _ in lapsed:
            del self._items[key]
        return [v for _, v in lapsed]


class ApprovalWatcher:
    """Tails the audit log from its current end and sends approval notices to ``sinks``
    (each sink queues and delivers on its own thread). ``source``: the database's engine
    (SQLite or PostgreSQL), or the path of a SQLite file (read through an engine of its
    own, disposed of on ``stop``)."""

    def __init__(
        self,
        source: sa.Engine | Path,
        sinks: Sequence[Sink],
        *,
        clock: Callable[[], float] = time.time,
        poll_s: float = APPROVAL_POLL_S,
        speaks: Callable[[], bool] = lambda: True,
    ) -> None:
        if isinstance(source, Path):
            self._engine = sa.create_engine(
                f"sqlite:///file:{source}?mode=ro&uri=true", poolclass=sa.pool.NullPool
            )
            self._owned = True
        else:
            self._engine = source
            self._owned = False
        self._sinks = list(sinks)
        self._clock = clock
        self._poll_s = poll_s
        # Whether this process sends the notices (the elected detection worker does; a
        # standby reads and tracks the same records, so it knows every open deadline when
        # it takes over, and sends nothing).
        self._speaks = speaks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.deadlines = Deadlines()
        self.sent = 0

    def start(self) -> None:
        with self._engine.connect() as conn:
            self._seq = int(conn.execute(_HIGH_SQL).scalar_one())
            self._prime(conn)
        self._thread = threading.Thread(target=self._run, name="garrison-approvals", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._owned:
            self._engine.dispose()

    def _prime(self, conn: sa.Connection) -> None:
        """Deadlines of the proposals and requests already open when the watcher starts."""
        now = self._clock()
        for change_id, kind, target, expires_at in conn.execute(
            sa.text(
                "SELECT id, kind, target, expires_at FROM pending_changes "
                "WHERE status = 'pending' AND expires_at > :now"
            ),
            {"now": now},
        ):
            item = {"type": "change", "id": change_id, "kind": kind, "target": target}
            self.deadlines.track(change_id, float(expires_at), item)
        for request_id, expires_at in conn.execute(
            sa.text(
                "SELECT id, expires_at FROM access_requests "
                "WHERE status = 'pending' AND expires_at > :now"
            ),
            {"now": now},
        ):
            self.deadlines.track(
                request_id, float(expires_at), {"type": "access", "id": request_id}
            )
        for lock_id, kind, requested_at in conn.execute(
            sa.text(
                "SELECT id, kind, lift_requested_at FROM locks WHERE lifted_at IS NULL "
                "AND lift_requested_at IS NOT NULL AND lift_requested_at > :since"
            ),
            {"since": now - LIFT_REQUEST_TTL_S},
        ):
            item = {"type": "lock-lift", "id": lock_id, "kind": kind}
            self.deadlines.track(lock_id, float(requested_at) + LIFT_REQUEST_TTL_S, item)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.poll()
            except Exception:  # the watcher outlives a locked, busy or lost database
                log.exception("approval watcher: poll failed; trying again")

    def poll(self) -> list[dict[str, Any]]:
        """Read what was committed since the last poll; send and return the notices."""
        with self._engine.connect() as conn:
            high = int(conn.execute(_HIGH_SQL).scalar_one())
            # The data plane's own events (thousands a second) are skipped by name in the
            # database: the batch limit counts only the rows that may concern approvers, so
            # a busy gateway never leaves the watcher behind.
            params = {
                "low": self._seq,
                "high": high,
                "skip": list(DATA_PLANE_EVENTS),
                "batch": APPROVAL_BATCH,
            }
            rows = conn.execute(_POLL_SQL, params).all()
            self._seq = high if len(rows) < APPROVAL_BATCH else int(rows[-1][0])
            records = []
            for _, record in rows:
                with contextlib.suppress(orjson.JSONDecodeError):
                    records.append(orjson.loads(bytes(record)))
            wanted = [r for r in records if _may_concern(r)]
            names = self._names(conn, wanted) if wanted else {}
        notices: list[dict[str, Any]] = []
        for record in wanted:
            notice = notice_for(record, names)
            if notice is None:
                continue
            item = notice["item"]
            if notice["kind"] == REQUESTED:
                expires_at = float(record.get("at") or 0) + _TTL[item["type"]]
                self.deadlines.track(item["id"], expires_at, item)
            elif notice["waiting"]:
                pass  # a first of several approvals: still waiting, same deadline
            elif not self.deadlines.settle(item["id"]) and notice["kind"] == EXPIRED:
                continue  # its lapse was announced already
            notices.append(notice)
        now = self._clock()
        for expires_at, item in self.deadlines.due(now):
            notices.append(
                {"kind": EXPIRED, "item": item, "by": None, "at": rfc3339(expires_at)}
                | {"waiting": False}
            )
        if not self._speaks():
            return []
        for notice in notices:
            for sink in self._sinks:
                sink.send(notice)
        self.sent += len(notices)
        return notices

    @staticmethod
    def _names(conn: sa.Connection, records: list[dict[str, Any]]) -> dict[str, str]:
        ids = {str(r[k]) for r in records for k in ("actor", "principal_id") if r.get(k)}
        if not ids:
            return {}
        rows = conn.execute(_NAMES_SQL, {"ids": sorted(ids)})
        return {str(i): str(n) for i, n in rows}


def _may_concern(record: Mapping[str, Any]) -> bool:
    name = record.get("name")
    if name in _ACCESS or name in _CHANGE or name in _LOCK_LIFT:
        return True
    data = record.get("data")
    return (
        isinstance(data, dict)
        and isinstance(data.get("origin"), dict)
        and ("change_id" in data["origin"])
    )
