"""Per-model upstream TLS: a CA bundle and an optional client certificate and key, as a JSON
object of absolute file paths (domain.upstream_tls); NULL keeps the system's CAs.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("upstream_tls", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("upstream_tls")
