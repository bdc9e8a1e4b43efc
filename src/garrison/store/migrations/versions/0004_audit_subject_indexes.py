"""Indexes on the audit log's subjects: key last-use reports and incident timelines read
every event of one credential or principal without scanning the whole log.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_credential_id", "audit_events", ["credential_id", "seq"])
    op.create_index("ix_audit_events_principal_id", "audit_events", ["principal_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_principal_id", "audit_events")
    op.drop_index("ix_audit_events_credential_id", "audit_events")
