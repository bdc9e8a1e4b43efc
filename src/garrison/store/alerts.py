"""Alerts: stored, deduplicated, and audit events themselves.

A new alert is one transaction holding its row and its ``alert.raised`` event (actor
``detector:<rule id>``). A repeat of an open alert grows its count, last time and evidence
without another audit event (the evidence events are in the log already). Acknowledging,
resolving and playbook actions are ``alert.updated`` events naming who acted.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads_respond import AlertRaised, AlertUpdated
from garrison.detect.engine import Verdict
from garrison.errors import BadRequest, Conflict, NotFound
from garrison.store import journal, schema
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import new_id

# Evidence indices kept per alert: the first ones and the latest (the log has them all).
ALERT_EVIDENCE_MAX = 50
# A note on an alert: a sentence or two.
ALERT_NOTE_MAX_CHARS = 1000

al = schema.alerts


def record(d: Journal, verdict: Verdict, *, now: float) -> tuple[str, bool]:
    """Store a finding: a new alert, or a repeat of the open one with the same key. Returns
    (alert id, whether it is new)."""
    with write_transaction(d.engine) as conn:
        return record_in(conn, verdict, now=now)


def record_in(conn: sa.Connection, verdict: Verdict, *, now: float) -> tuple[str, bool]:
    """``record`` inside the caller's write transaction (the detection worker stores a
    range's alerts with its cursor in one)."""
    f = verdict.finding
    if not verdict.new:
        row = conn.execute(
            sa.select(al)
            .where(al.c.dedup_key == verdict.dedup_key, al.c.status != "resolved")
            .order_by(al.c.seq.desc())
            .limit(1)
        ).first()
        if row is not None:
            evidence = orjson.loads(row.evidence)
            evidence = evidence + [i for i in f.evidence if i not in evidence]
            if len(evidence) > ALERT_EVIDENCE_MAX:
                evidence = (
                    evidence[: ALERT_EVIDENCE_MAX // 2] + evidence[-ALERT_EVIDENCE_MAX // 2 :]
                )
            conn.execute(
                sa.update(al)
                .where(al.c.id == row.id)
                .values(
                    count=row._mapping["count"] + 1,
                    last_at=f.at,
                    updated_at=now,
                    evidence=orjson.dumps(evidence).decode(),
                )
            )
            return row.id, False
    alert_id = new_id("alr")
    conn.execute(
        sa.insert(al).values(
            id=alert_id,
            rule_id=f.rule_id,
            title=f.title,
            severity=f.severity.label,
            reason=f.reason,
            subject_kind=f.subject_kind,
            subject_id=f.subject_id,
            dedup_key=verdict.dedup_key,
            status="open",
            first_at=f.at,
            last_at=f.at,
            raised_at=now,
            count=1,
            evidence=orjson.dumps(list(f.evidence)).decode(),
            data=orjson.dumps(f.data).decode(),
            principal_id=f.principal_id,
            org_id=f.org_id,
            credential_id=f.credential_id,
            updated_at=now,
        )
    )
    journal.record(
        conn,
        at=now,
        actor=f"detector:{f.rule_id}",
        origin=None,
        payload=AlertRaised(
            alert_id=alert_id,
            rule_id=f.rule_id,
            severity=f.severity.label,
            reason=f.reason,
            subject={"kind": f.subject_kind, "id": f.subject_id},
            evidence=list(f.evidence),
            detail=f.data,
            detected_after_s=round(now - f.at, 3),
        ),
        feed=False,
        entity="alert",
        entity_id=alert_id,
        op="raise",
        principal_id=f.principal_id,
        credential_id=f.credential_id if f.credential_id and len(f.credential_id) <= 40 else None,
    )
    return alert_id, True


def update(
    d: Journal,
    alert_id: str,
    *,
    now: float,
    status: str | None = None,
    note: str | None = None,
    action: dict[str, Any] | None = None,
    incident_id: str | None = None,
) -> dict[str, Any]:
    """Acknowledge or resolve an alert, or record a playbook action on it."""
    if status is not None and status not in ("acked", "resolved"):
        raise BadRequest("an alert can be acked or resolved")
    if note is not None and len(note) > ALERT_NOTE_MAX_CHARS:
        raise BadRequest(f"note is longer than {ALERT_NOTE_MAX_CHARS} characters")
    with write_transaction(d.engine) as conn:
        row = conn.execute(sa.select(al).where(al.c.id == alert_id)).first()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}", public_message=f"No alert {alert_id!r}.")
        values: dict[str, Any] = {"updated_at": now}
        if status is not None:
            if row.status == "resolved":
                raise Conflict(f"alert {alert_id} is already resolved")
            if row.status == status:
                raise Conflict(f"alert {alert_id} is already {status}")
            values["status"] = status
        if action is not None:
            actions = orjson.loads(row.actions)
            actions.append(action)
            values["actions"] = orjson.dumps(actions).decode()
        updated = AlertUpdated(
            alert_id=alert_id,
            from_status=ABSENT if status is None else row.status,
            to=ABSENT if status is None else status,
            note=note if note else ABSENT,
            action=ABSENT if action is None else action,
        )
        if incident_id is not None:
            values["incident_id"] = incident_id
        conn.execute(sa.update(al).where(al.c.id == alert_id).values(**values))
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=updated,
            feed=False,
            entity="alert",
            entity_id=alert_id,
            op="update",
        )
    return {"id": alert_id, **{k: v for k, v in values.items() if k != "actions"}}


def _alert_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "seq": r.seq,
        "rule_id": r.rule_id,
        "title": r.title,
        "severity": r.severity,
        "reason": r.reason,
        "subject": {"kind": r.subject_kind, "id": r.subject_id},
        "status": r.status,
        "first_at": r.first_at,
        "last_at": r.last_at,
        "raised_at": r.raised_at,
        "count": r.count,
        "evidence": orjson.loads(r.evidence),
        "data": orjson.loads(r.data),
        "principal_id": r.principal_id,
        "org_id": r.org_id,
        "credential_id": r.credential_id,
        "incident_id": r.incident_id,
        "actions": orjson.loads(r.actions),
        "updated_at": r.updated_at,
    }


def list_alerts(
    conn: sa.Connection,
    *,
    status: str | None = None,
    updated_after: float | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    stmt = sa.select(al).order_by(al.c.updated_at, al.c.seq).limit(limit)
    if status is not None:
        stmt = stmt.where(al.c.status == status)
    if updated_after is not None:
        stmt = stmt.where(al.c.updated_at > updated_after)
    else:
        stmt = sa.select(al).order_by(al.c.seq.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(al.c.status == status)
    rows = [_alert_dict(r) for r in conn.execute(stmt)]
    return sorted(rows, key=lambda a: (a["updated_at"], a["seq"]))


def show_alert(conn: sa.Connection, alert_id: str) -> dict[str, Any]:
    row = conn.execute(sa.select(al).where(al.c.id == alert_id)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id!r}", public_message=f"No alert {alert_id!r}.")
    return _alert_dict(row)
