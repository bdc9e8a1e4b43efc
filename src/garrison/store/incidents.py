"""Incidents: opening one, moving it through its lifecycle, notes — each one transaction with
its audit event — and the timeline and blast-radius report, built from the audit log.

The subjects of an incident are vendors, principals and credentials. They expand to every
principal of a vendor and every credential of a principal; the timeline is every audit event
of those since the incident's start, denials included (refusals of a key that did not
authenticate carry its public id as ``presented_key_id``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads import payload_of
from garrison.audit.payloads_respond import IncidentOpened, IncidentUpdated
from garrison.domain.incidents import IncidentStatus, check_incident_transition
from garrison.errors import BadRequest, NotFound
from garrison.store import journal, queries, schema
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.json_paths import record_field
from garrison.store.rows import new_id

# An incident's title: a line, like an issue tracker's.
INCIDENT_TITLE_MAX_CHARS = 200
# A note: a paragraph of what was seen or done.
INCIDENT_NOTE_MAX_CHARS = 4000
# Events listed in a report's timeline (the export has them all, with proofs).
TIMELINE_MAX_EVENTS = 10_000

_SUBJECTS = {
    "vendor": (schema.orgs, "vendor"),
    "principal": (schema.principals, "principal"),
    "credential": (schema.credentials, "key"),
}


def _resolve(conn: sa.Connection, kind: str, ref: str) -> str:
    table, what = _SUBJECTS[kind]
    cond = table.c.id == ref
    if kind != "credential":
        cond = sa.or_(cond, table.c.name == ref)
    row = conn.execute(sa.select(table.c.id).where(cond)).first()
    if row is None:
        raise BadRequest(f"{what} {ref!r} does not exist")
    return str(row.id)


def _get(conn: sa.Connection, incident_id: str) -> Any:
    row = conn.execute(
        sa.select(schema.incidents).where(schema.incidents.c.id == incident_id)
    ).first()
    if row is None:
        raise NotFound(
            f"no incident {incident_id!r}", public_message=f"No incident {incident_id!r}."
        )
    return row


def _note(
    conn: sa.Connection, incident_id: str, at: float, author: str, kind: str, text: str
) -> None:
    conn.execute(
        sa.insert(schema.incident_notes).values(
            incident_id=incident_id, at=at, author=author, kind=kind, text=text
        )
    )


def open_incident(
    d: Journal,
    title: str,
    *,
    now: float,
    since: float | None = None,
    vendors: Iterable[str] = (),
    principals: Iterable[str] = (),
    credentials: Iterable[str] = (),
) -> str:
    title = title.strip()
    if not title:
        raise BadRequest("an incident needs a title")
    if len(title) > INCIDENT_TITLE_MAX_CHARS:
        raise BadRequest(f"title is longer than {INCIDENT_TITLE_MAX_CHARS} characters")
    start = now if since is None else since
    if start > now:
        raise BadRequest("the incident's start (since) is in the future")
    incident_id = new_id("inc")
    with write_transaction(d.engine) as conn:
        subjects = {
            "vendor": sorted({_resolve(conn, "vendor", r) for r in vendors}),
            "principal": sorted({_resolve(conn, "principal", r) for r in principals}),
            "credential": sorted({_resolve(conn, "credential", r) for r in credentials}),
        }
        conn.execute(
            sa.insert(schema.incidents).values(
                id=incident_id,
                title=title,
                status=IncidentStatus.OPEN.value,
                opened_by=d.actor,
                opened_at=now,
                since=start,
                updated_at=now,
                subjects=orjson.dumps(subjects).decode(),
            )
        )
        _note(conn, incident_id, now, d.actor, "status", "opened")
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=IncidentOpened(
                incident_id=incident_id,
                title=title,
                since=start,
                vendor=subjects["vendor"],
                principal=subjects["principal"],
                credential=subjects["credential"],
            ),
            feed=False,
            entity="incident",
            entity_id=incident_id,
            op="open",
        )
    return incident_id


def update_incident(
    d: Journal,
    incident_id: str,
    *,
    now: float,
    status: IncidentStatus | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    if note is not None:
        note = note.strip()
        if not note:
            raise BadRequest("the note is empty")
        if len(note) > INCIDENT_NOTE_MAX_CHARS:
            raise BadRequest(f"note is longer than {INCIDENT_NOTE_MAX_CHARS} characters")
    if status is None and note is None:
        raise BadRequest("nothing to change: give a status or a note")
    with write_transaction(d.engine) as conn:
        row = _get(conn, incident_id)
        moved: tuple[str, str] | None = None
        if status is not None:
            current = IncidentStatus(row.status)
            check_incident_transition(current, status)
            conn.execute(
                sa.update(schema.incidents)
                .where(schema.incidents.c.id == row.id)
                .values(status=status.value, updated_at=now)
            )
            _note(conn, row.id, now, d.actor, "status", f"{current.value} → {status.value}")
            moved = (current.value, status.value)
        if note is not None:
            _note(conn, row.id, now, d.actor, "note", note)
        updated = IncidentUpdated(
            incident_id=row.id,
            from_status=ABSENT if moved is None else moved[0],
            to=ABSENT if moved is None else moved[1],
            note=ABSENT if note is None else note,
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=updated,
            feed=False,
            entity="incident",
            entity_id=row.id,
            op="update",
        )
    return updated.as_data()


def list_incidents(conn: sa.Connection) -> list[dict[str, Any]]:
    i = schema.incidents
    # Who opened it, by name (null when the actor is not a principal, e.g. a playbook).
    opener = schema.principals.alias("opener")
    stmt = (
        sa.select(i, opener.c.name.label("opened_by_name"))
        .select_from(i.outerjoin(opener, opener.c.id == i.c.opened_by))
        .order_by(i.c.opened_at.desc())
    )
    return [
        {
            "id": r.id,
            "title": r.title,
            "status": r.status,
            "opened_by": r.opened_by,
            "opened_by_name": r.opened_by_name,
            "opened_at": r.opened_at,
            "since": r.since,
            "updated_at": r.updated_at,
        }
        for r in conn.execute(stmt)
    ]


# ── the report ─────────────────────────────────────────────────────────────────────────────
def _expand(conn: sa.Connection, subjects: dict[str, list[str]]) -> tuple[set[str], set[str]]:
    """Every principal and credential the subjects stand for."""
    p, c = schema.principals, schema.credentials
    principals = set(subjects.get("principal", []))
    credentials = set(subjects.get("credential", []))
    vendors = subjects.get("vendor", [])
    if vendors:
        principals |= {r.id for r in conn.execute(sa.select(p.c.id).where(p.c.org_id.in_(vendors)))}
    if principals:
        credentials |= {
            r.id for r in conn.execute(sa.select(c.c.id).where(c.c.principal_id.in_(principals)))
        }
    if credentials:
        principals |= {
            r.principal_id
            for r in conn.execute(sa.select(c.c.principal_id).where(c.c.id.in_(credentials)))
        }
    return principals, credentials


def timeline(
    conn: sa.Connection, incident_id: str, *, limit: int | None = TIMELINE_MAX_EVENTS
) -> list[tuple[int, bytes]]:
    """(leaf index, record) of every event of the incident's subjects since its start."""
    row = _get(conn, incident_id)
    principals, credentials = _expand(conn, orjson.loads(row.subjects))
    if not principals and not credentials:
        return []
    a = schema.audit_events
    presented = record_field(a.c.record, "data", "presented_key_id")
    conds = []
    if principals:
        ids = sorted(principals)
        conds.append(a.c.principal_id.in_(ids))
        # What they did as admins (keys minted, locks placed): the actor is the subject.
        conds.append(record_field(a.c.record, "actor").in_(ids))
    if credentials:
        ids = sorted(credentials)
        conds += [a.c.credential_id.in_(ids), presented.in_(ids)]
    stmt = (
        sa.select(a.c.seq, a.c.record).where(a.c.at >= row.since, sa.or_(*conds)).order_by(a.c.seq)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(r.seq) - 1, bytes(r.record)) for r in conn.execute(stmt)]


def _bucket() -> dict[str, Any]:
    return {"calls": 0, "refused": 0, "tokens_in": 0, "tokens_out": 0, "first": None, "last": None}


def _seen(bucket: dict[str, Any], at: float) -> None:
    bucket["first"] = at if bucket["first"] is None else min(bucket["first"], at)
    bucket["last"] = at if bucket["last"] is None else max(bucket["last"], at)


def incident_report(conn: sa.Connection, incident_id: str, now: float) -> dict[str, Any]:
    """What the subjects reached, from where, what they tried and could not, and who else
    came from the same addresses."""
    row = _get(conn, incident_id)
    subjects = orjson.loads(row.subjects)
    principals, credentials = _expand(conn, subjects)
    events = timeline(conn, incident_id, limit=None)
    models: dict[str, dict[str, Any]] = defaultdict(_bucket)
    sources: dict[str, dict[str, Any]] = defaultdict(_bucket)
    refusals: Counter[tuple[str, str]] = Counter()
    first = last = None
    lines: list[dict[str, Any]] = []
    for index, record in events:
        ev = orjson.loads(record)
        name, at, data = ev["name"], ev["at"], ev.get("data") or {}
        model = ev.get("model") or "-"
        facts = payload_of(name, data)
        address = facts.client_address
        if name.startswith("request."):
            first = at if first is None else min(first, at)
            last = at if last is None else max(last, at)
            if address:
                _seen(sources[address], at)
        if name == "request.allowed":
            models[model]["calls"] += 1
            _seen(models[model], at)
            if address:
                sources[address]["calls"] += 1
        elif name == "request.completed":
            models[model]["tokens_in"] += facts.tokens_in or 0
            models[model]["tokens_out"] += facts.tokens_out or 0
        elif name == "request.denied":
            for reason in facts.reasons or ["-"]:
                refusals[(model, reason)] += 1
            if model != "-":
                models[model]["refused"] += 1
                _seen(models[model], at)
            if address:
                sources[address]["refused"] += 1
        if len(lines) < TIMELINE_MAX_EVENTS:
            lines.append(
                {
                    "index": index,
                    "at": at,
                    "name": name,
                    "actor": ev.get("actor"),
                    "principal_id": ev.get("principal_id"),
                    "credential_id": ev.get("credential_id") or facts.presented_key_id,
                    "model": ev.get("model"),
                    "client_address": address,
                    "status": facts.status,
                    "reasons": list(facts.reasons or ()) if "reasons" in data else None,
                    "request_id": ev.get("request_id"),
                }
            )
    others = _others_from(conn, set(sources), principals, row.since)
    p = schema.principals
    names = {
        r.id: r.name
        for r in conn.execute(sa.select(p.c.id, p.c.name).where(p.c.id.in_(sorted(principals))))
    }
    for line in lines:
        pid = line["principal_id"]
        line["principal"] = names.get(pid, pid) if pid else None
    c, p = schema.credentials, schema.principals
    creds = [
        {
            "id": r.id,
            "principal": r.principal,
            "state": queries.key_state(r, now),
            "expires_at": r.expires_at,
            "revoked_at": r.revoked_at,
            "canary": bool(r.canary),
        }
        for r in conn.execute(
            sa.select(c, p.c.name.label("principal"))
            .join(p, p.c.id == c.c.principal_id)
            .where(c.c.id.in_(sorted(credentials)))
            .order_by(c.c.created_at)
        )
    ]
    lk = schema.locks
    targets = sorted(set(subjects.get("vendor", [])) | principals | credentials)
    locks = [
        {
            "id": r.id,
            "kind": r.kind,
            "target": r.target_name,
            "reason": r.reason,
            "created_at": r.created_at,
            "lifted_at": r.lifted_at,
        }
        for r in conn.execute(
            sa.select(lk)
            .where(sa.or_(lk.c.incident_id == row.id, lk.c.target.in_(targets)))
            .order_by(lk.c.created_at)
        )
    ]
    notes = [
        {"at": r.at, "author": r.author, "kind": r.kind, "text": r.text}
        for r in conn.execute(
            sa.select(schema.incident_notes)
            .where(schema.incident_notes.c.incident_id == row.id)
            .order_by(schema.incident_notes.c.seq)
        )
    ]
    org_names = {
        r.id: r.name
        for r in conn.execute(
            sa.select(schema.orgs.c.id, schema.orgs.c.name).where(
                schema.orgs.c.id.in_(subjects.get("vendor", []))
            )
        )
    }
    return {
        "incident": {
            "id": row.id,
            "title": row.title,
            "status": row.status,
            "opened_by": row.opened_by,
            "opened_at": row.opened_at,
            "since": row.since,
            "subjects": {
                "vendors": [org_names.get(v, v) for v in subjects.get("vendor", [])],
                "principals": sorted(names.get(x, x) for x in subjects.get("principal", [])),
                "credentials": subjects.get("credential", []),
            },
        },
        "principals": sorted(names.values()),
        "first_seen": first,
        "last_seen": last,
        "models": [{"model": m, **v} for m, v in sorted(models.items())],
        "refusals": [
            {"model": m, "reason": r, "count": n} for (m, r), n in sorted(refusals.items())
        ],
        "sources": [{"address": a, **v} for a, v in sorted(sources.items())],
        "others_from_same_sources": others,
        "credentials": creds,
        "locks": locks,
        "notes": notes,
        "events": len(events),
        "timeline": lines,
        "generated_at": now,
    }


def _others_from(
    conn: sa.Connection, addresses: set[str], principals: set[str], since: float
) -> list[dict[str, Any]]:
    """Other principals whose calls came from the subjects' source addresses since the start."""
    if not addresses:
        return []
    a, p = schema.audit_events, schema.principals
    address = queries.caller_address_sql(a.c.record)
    stmt = (
        sa.select(a.c.principal_id, address.label("address"), sa.func.count(), sa.func.max(a.c.at))
        .where(
            a.c.at >= since,
            a.c.name.in_(["request.allowed", "request.denied"]),
            a.c.principal_id.is_not(None),
            a.c.principal_id.not_in(sorted(principals)) if principals else sa.true(),
            address.in_(sorted(addresses)),
        )
        .group_by(a.c.principal_id, address)
    )
    rows = list(conn.execute(stmt))
    names = {
        r.id: r.name
        for r in conn.execute(
            sa.select(p.c.id, p.c.name).where(p.c.id.in_({r.principal_id for r in rows}))
        )
    }
    return [
        {"principal": names.get(r[0], r[0]), "address": r[1], "calls": r[2], "last_seen": r[3]}
        for r in sorted(rows, key=lambda r: (r[1], r[0]))
    ]
