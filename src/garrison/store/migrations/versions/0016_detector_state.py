"""Detection as one worker over the shared log: the elected worker's lease, the cursor (the
last audit row it has judged), its detectors' serialised state, and the findings whose
playbooks and notices have not run yet.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "detector_state",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=True),
        sa.Column("pending", sa.Text, nullable=False, server_default="[]"),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("detector_state")
