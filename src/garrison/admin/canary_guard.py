"""Canary keys stay armed: only a security-admin may revoke or rotate one, and every attempt
(allowed or refused) raises an alert.

A canary is a key nobody should ever use; its value is that an intruder does not know which
keys are canaries. A vendor-manager whose scope holds a canary could otherwise disarm it in
silence (revoke it, or rotate it and hand out the successor). Refusing them tells them the
key is special — unavoidable — but the refused attempt is itself an alert, so probing for
canaries is caught the first time.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from garrison.admin.authz import Action, reach
from garrison.admin.base import Ctx, Refused
from garrison.detect.engine import Verdict
from garrison.detect.observation import Finding, Severity
from garrison.domain import Reason
from garrison.errors import Forbidden
from garrison.store import Directory, alerts, schema

# One rule per outcome, so an attempt refused and a later retirement are two alerts (each
# notified), not one alert counted twice.
RULES = {
    "done": ("canary-key-retired", "A canary key was revoked or rotated"),
    "refused": ("canary-key-retire-refused", "Someone tried to revoke or rotate a canary key"),
}
CANARY_RULE = "canary-guard"


def _is_canary(conn: sa.Connection, key_id: str) -> bool:
    c = schema.credentials
    return bool(conn.execute(sa.select(c.c.canary).where(c.c.id == key_id)).scalar())


def finding(ctx: Ctx, key_id: str, op: str, outcome: str) -> Finding:
    rule_id, title = RULES[outcome]
    return Finding(
        rule_id=rule_id,
        title=title,
        severity=Severity.HIGH,
        subject_kind="credential",
        subject_id=key_id,
        reason=f"credential.canary_{op}_{outcome}",
        at=ctx.now,
        data={
            "op": op,
            "outcome": outcome,
            "admin": ctx.admin.name,
            "admin_id": ctx.admin.id,
            "admin_credential_id": ctx.credential_id,
            "address": ctx.address,
            "request_id": ctx.request_id,
        },
        principal_id=ctx.admin.id,
        org_id=ctx.admin.org_id,
        credential_id=key_id,
    )


async def raise_alert(ctx: Ctx, key_id: str, op: str, outcome: str) -> None:
    """Through the detection service when it runs (sinks, playbooks), else stored directly."""
    found = finding(ctx, key_id, op, outcome)
    monitor = ctx.backend.monitor
    if monitor is not None:
        await asyncio.to_thread(monitor.raise_finding, found)
        return
    directory = Directory(
        ctx.backend.engine,
        actor=f"detector:{found.rule_id}",
        pepper=ctx.backend.pepper,
        sealer=ctx.backend.sealer,
    )
    verdict = Verdict(found, f"{found.rule_id}|credential|{key_id}", new=True)
    await asyncio.to_thread(alerts.record, directory, verdict, now=ctx.now)


async def guard(ctx: Ctx, key_id: str, op: str) -> bool:
    """Whether ``key_id`` is a canary; refuses (after raising the alert) anyone who may not
    retire one. The caller raises the "done" alert once the change is written."""
    if not await ctx.read(_is_canary, key_id):
        return False
    if not reach(ctx.admin, Action.RETIRE_CANARY, ctx.scope).allowed:
        await raise_alert(ctx, key_id, op, "refused")
        raise Refused(
            Reason.ADMIN_ROLE,
            Forbidden(f"only a security-admin may {op} this key", rule=CANARY_RULE),
        )
    return True
