"""Alerts raised by the detection engine.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("subject_kind", sa.String(20), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("first_at", sa.Float, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
        sa.Column("raised_at", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("principal_id", sa.String(40), nullable=True),
        sa.Column("org_id", sa.String(40), nullable=True),
        sa.Column("credential_id", sa.String(40), nullable=True),
        sa.Column("incident_id", sa.String(40), nullable=True),
        sa.Column("actions", sa.Text, nullable=False, server_default="[]"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_alerts_dedup", "alerts", ["dedup_key", "status"])


def downgrade() -> None:
    op.drop_index("ix_alerts_dedup", "alerts")
    op.drop_table("alerts")
