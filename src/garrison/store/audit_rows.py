"""The audit log as a security read must see it: committed leaves and the outbox together.

A directory change writes its event to the audit outbox in its own transaction; the audit
writer gives it a leaf index moments later. A rule that reads the log to decide a change
(a lock reaching the keys made with a key, the addresses an inviter used) must see a change
committed a moment ago, so it reads both tables through ``audit_rows()``. Rows from the
outbox have ``pending`` 1 and their own ``seq`` (not a leaf index); they are newer than every
leaf, so "newest first" is ``ORDER BY pending DESC, seq DESC``. Reads that report leaf
indices (timelines, proofs, verification) read ``audit_events`` alone.
"""

from __future__ import annotations

import sqlalchemy as sa

from garrison.store import schema


def _columns(t: sa.Table) -> list[sa.ColumnElement[object]]:
    return [
        t.c.at,
        t.c.name,
        t.c.request_id,
        t.c.principal_id,
        t.c.credential_id,
        t.c.model,
        t.c.record,
        t.c.seq,
    ]


def audit_rows() -> sa.Subquery:
    """Every audit record, integrated (``pending`` 0) or waiting in the outbox (1)."""
    e, o = schema.audit_events, schema.audit_outbox
    return sa.union_all(
        sa.select(*_columns(e), sa.literal(0).label("pending")),
        sa.select(*_columns(o), sa.literal(1).label("pending")),
    ).subquery("audit_rows")
