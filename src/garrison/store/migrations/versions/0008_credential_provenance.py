"""Credential provenance, service-account owners, enrollment codes.

Every existing key becomes ``legacy``; its creator is copied from its ``credential.created``
audit event where the log has one (keys keep working; they cannot approve anything).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(
            sa.Column("provenance", sa.String(20), nullable=False, server_default="legacy")
        )
        batch.add_column(sa.Column("created_by", sa.String(200), nullable=True))
    with op.batch_alter_table("principals") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("invited_by", sa.String(200), nullable=True))
    op.create_table(
        "enrollments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("invited_by", sa.String(200), nullable=False),
        sa.Column("invited_with", sa.String(40), nullable=True),
        sa.Column("invited_from", sa.String(64), nullable=True),
        sa.Column("change_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("used_from", sa.String(64), nullable=True),
        sa.Column("credential_id", sa.String(40), nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT credential_id, record FROM audit_events "
            "WHERE name = 'credential.created' AND credential_id IS NOT NULL"
        )
    )
    for credential_id, record in rows.fetchall():
        try:
            actor = orjson.loads(record).get("actor")
        except orjson.JSONDecodeError:
            continue
        if isinstance(actor, str) and actor:
            conn.execute(
                sa.text("UPDATE credentials SET created_by = :a WHERE id = :i"),
                {"a": actor[:200], "i": credential_id},
            )


def downgrade() -> None:
    op.drop_table("enrollments")
    with op.batch_alter_table("principals") as batch:
        batch.drop_column("invited_by")
        batch.drop_column("owner_id")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("created_by")
        batch.drop_column("provenance")
