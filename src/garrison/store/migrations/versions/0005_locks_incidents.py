"""Locks (kill switches) and incidents.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("opened_by", sa.String(200), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("subjects", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "incident_notes",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(40), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("target_name", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("incident_id", sa.String(40), sa.ForeignKey("incidents.id"), nullable=True),
        sa.Column("lifted_at", sa.Float, nullable=True),
        sa.Column("lifted_by", sa.String(200), nullable=True),
        sa.Column("lift_reason", sa.String(500), nullable=True),
        # Lifting a global lockdown takes two admins: the first one's request waits here.
        sa.Column("lift_requested_by", sa.String(200), nullable=True),
        sa.Column("lift_requested_at", sa.Float, nullable=True),
    )
    op.create_index("ix_locks_lifted_at", "locks", ["lifted_at"])


def downgrade() -> None:
    op.drop_index("ix_locks_lifted_at", "locks")
    op.drop_table("locks")
    op.drop_table("incident_notes")
    op.drop_table("incidents")
