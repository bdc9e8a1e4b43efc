"""Locks on the data plane: refusing covered calls, cutting covered calls in flight, and
failing closed when this process's view of the locks is stale.

Every call that passes authentication joins ``state.live`` until it ends. When a new
snapshot is swapped in, ``cut_covered`` walks the live calls: a call now covered by a lock,
or whose credential was revoked, principal disabled or vendor stopped, or that the policy
engine now refuses (``gateway.redecide``), is marked with the cause and its task
cancelled; the handler catches that cancellation, ends the answer with an error in the
API's own shape (a final stream event for streams) and closes the upstream connection.
Swapping and walking happen with no await in between, and a call joins and checks the
snapshot with none either, so no call slips between the two.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from garrison.domain import Level, Model, Reason
from garrison.domain.standing import standing_refusal
from garrison.gateway.redecide import refusal
from garrison.gateway.state import GatewayState, StaleMode
from garrison.store.snapshot import Snapshot

log = logging.getLogger("garrison.gateway")


@dataclass(frozen=True, slots=True)
class Cut:
    reason: Reason
    lock_id: str | None = None


def _withdrawn(snap: Snapshot, call: object, now: float) -> Reason | None:
    """Why a live call's standing is gone in ``snap`` (revoked, disabled, vendor stopped, a
    sign-in token expired, a grant gone). The standing rules are those of admission
    (``garrison.domain.standing``), without the address (checked when the call began)."""
    session = getattr(call, "session", None)
    cred = None
    if session is not None:
        if now >= session.expires_at:
            return Reason.TOKEN_EXPIRED
        principal_id = session.principal_id
    else:
        cred = snap.credentials.get(getattr(call, "credential_id", None) or "")
        if cred is None:
            return Reason.REVOKED_IN_FLIGHT
        principal_id = cred.principal_id
    principal = snap.principals.get(principal_id)
    org = snap.orgs.get(principal.org_id) if principal is not None else None
    reason = standing_refusal(credential=cred, principal=principal, org=org, now=now, address=None)
    if reason is not None:
        return Reason.REVOKED_IN_FLIGHT if reason is Reason.CREDENTIAL_REVOKED else reason
    assert principal is not None  # an inactive or missing principal is refused above
    model = snap.models.get(getattr(call, "model", None) or "")
    if (
        model is not None
        and model.level >= Level.CRITICAL
        and not snap.has_grant(principal.id, model.id, now)
    ):
        return Reason.GRANT_REQUIRED  # the grant expired or was revoked mid-call
    return None


def cut_covered(state: GatewayState, *, redecide: bool = True) -> int:
    """Cut every live call the current snapshot no longer allows; returns how many.

    ``redecide``: also decide each call again with the policy engine (after a snapshot
    swap); the watcher's ticks between swaps only re-check locks, expiry and standing."""
    if not state.live:
        return 0
    snap = state.snapshot
    now = state.clock()
    cut = 0
    for call in list(state.live):
        if call.cut is not None or call.task is None:
            continue
        lock = snap.locks.covering(
            now,
            credential_id=call.credential_id,
            principal_id=call.principal_id,
            org_id=call.org_id,
            model_id=call.model_id,
            address=call.peer,
        )
        if lock is not None:
            call.cut = Cut(Reason.LOCKED, lock.id)
        else:
            reason = _withdrawn(snap, call, now)
            if reason is None and redecide:
                reason = refusal(snap, state.policy, call, now, state.identity_policy)
            if reason is None:
                continue
            call.cut = Cut(reason)
        call.task.cancel()
        cut += 1
    if cut:
        log.warning("cut %d call(s) in flight", cut)
    return cut


def stale_refusal(state: GatewayState, model: Model | None) -> bool:
    """True when this call must be refused because the lock view is stale."""
    age = time.monotonic() - state.lock_view_at
    if age <= state.limits.lock_view_stale_s:
        return False
    mode = state.stale_mode
    if mode is StaleMode.OPEN:
        log.error("LOCK VIEW STALE (%.1f s): serving anyway (stale_mode = open)", age)
        return False
    if mode is StaleMode.ALL:
        return True
    return model is not None and model.level >= Level.RESTRICTED


def uncancel() -> None:
    """Undo the cancellation a cut used to interrupt this task, so the handler can answer."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
