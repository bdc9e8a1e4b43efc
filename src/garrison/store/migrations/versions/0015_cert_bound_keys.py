"""Keys bound to a client certificate (RFC 8705 style): the certificate's x5t#S256 on the
credential; NULL (every existing key) is a plain key. Expand only.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("cert_thumbprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("cert_thumbprint")
