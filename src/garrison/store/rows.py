"""Row helpers every directory write shares: new ids, look-ups by id or name, uniqueness."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa

from garrison.errors import BadRequest, Conflict


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def unique(conn: sa.Connection, table: sa.Table, name: str, what: str) -> None:
    if conn.execute(sa.select(table.c.id).where(table.c.name == name)).first() is not None:
        raise Conflict(f"{what} {name!r} already exists")


def lookup(conn: sa.Connection, table: sa.Table, ref: str, what: str) -> Any:
    """The row whose id or name is ``ref``; ``BadRequest`` naming ``what`` if none."""
    row = conn.execute(
        sa.select(table).where(sa.or_(table.c.id == ref, table.c.name == ref))
    ).first()
    if row is None:
        raise BadRequest(f"{what} {ref!r} does not exist")
    return row
