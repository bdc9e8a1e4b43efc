"""Vendors as first-class objects; principal roles; canary keys.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("sponsor_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("contract_start", sa.Float, nullable=True))
        batch.add_column(sa.Column("contract_end", sa.Float, nullable=True))
        batch.add_column(sa.Column("networks", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("seat_limit", sa.Integer, nullable=True))
        batch.add_column(sa.Column("ceiling_level", sa.Integer, nullable=True))
        batch.add_column(
            sa.Column("ceiling_compartments", sa.Text, nullable=False, server_default="[]")
        )
        batch.add_column(sa.Column("security_review_at", sa.Float, nullable=True))
        batch.add_column(
            sa.Column("agreement_ref", sa.String(200), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("status", sa.String(20), nullable=False, server_default="active")
        )
    with op.batch_alter_table("principals") as batch:
        batch.add_column(sa.Column("roles", sa.Text, nullable=False, server_default="[]"))
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("canary", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("canary")
    with op.batch_alter_table("principals") as batch:
        batch.drop_column("roles")
    with op.batch_alter_table("orgs") as batch:
        for column in (
            "status",
            "agreement_ref",
            "security_review_at",
            "ceiling_compartments",
            "ceiling_level",
            "seat_limit",
            "networks",
            "contract_end",
            "contract_start",
            "sponsor_id",
        ):
            batch.drop_column(column)
