"""Outbox rows name the service whose relay publishes them (services may share a database).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 13:51:32.307807
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ballast_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("producer", sa.String(length=200), nullable=True))
        batch_op.drop_index(
            batch_op.f("ix_ballast_outbox_unsent"), sqlite_where=sa.text("sent_at IS NULL")
        )
        batch_op.create_index(
            "ix_ballast_outbox_unsent",
            ["producer", "id"],
            unique=False,
            postgresql_where=sa.text("sent_at IS NULL"),
            sqlite_where=sa.text("sent_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("ballast_outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_ballast_outbox_unsent",
            postgresql_where=sa.text("sent_at IS NULL"),
            sqlite_where=sa.text("sent_at IS NULL"),
        )
        batch_op.create_index(
            batch_op.f("ix_ballast_outbox_unsent"),
            ["id"],
            unique=False,
            postgresql_where=sa.text("sent_at IS NULL"),
            sqlite_where=sa.text("sent_at IS NULL"),
        )
        batch_op.drop_column("producer")
