"""Sign-in sessions are recorded (``sessions``) and carry their roles in the token: the
``session_roles`` table (roles a session lost to the provider's groups, looked up on every
admin call) goes.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("session_roles")
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("jkt", sa.String(64), nullable=False),
        sa.Column("amr", sa.Text, nullable=False),
        sa.Column("acr", sa.String(200), nullable=True),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
    )
    op.create_index("ix_sessions_principal_id", "sessions", ["principal_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_principal_id", table_name="sessions")
    op.drop_table("sessions")
    op.create_table(
        "session_roles",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("dropped", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
