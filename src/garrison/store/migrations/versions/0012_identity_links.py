"""Identity links: a person's (issuer, subject) at an OpenID provider, recorded at first sign-in;
and the roles each sign-in session lost to the provider's groups.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_links",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("principal_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("enrollment_id", sa.String(40), nullable=False),
        sa.Column("linked_at", sa.Float, nullable=False),
        sa.Column("linked_from", sa.String(64), nullable=True),
        sa.Column("unlinked_at", sa.Float, nullable=True),
        sa.UniqueConstraint("issuer", "subject", name="uq_identity_links_issuer_subject"),
    )
    op.create_table(
        "session_roles",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("dropped", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("session_roles")
    op.drop_table("identity_links")
