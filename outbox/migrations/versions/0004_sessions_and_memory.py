"""Sessions (conversations owned by one tenant and user) and scoped agent memory.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:43:29.808306
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outbox.columns

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ballast_memory",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=700), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", outbox.columns.UtcDateTime(timezone=True), nullable=True),
        sa.Column("invalidated_at", outbox.columns.UtcDateTime(timezone=True), nullable=True),
        sa.Column("invalidated_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ballast_memory", schema=None) as batch_op:
        batch_op.create_index("ix_ballast_memory_tenant", ["tenant", "updated_at"], unique=False)
        batch_op.create_index("ux_ballast_memory_key", ["scope", "owner", "key"], unique=True)

    op.create_table(
        "ballast_memory_tag",
        sa.Column(
            "memory_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("memory_id", "tag"),
    )
    with op.batch_alter_table("ballast_memory_tag", schema=None) as batch_op:
        batch_op.create_index("ix_ballast_memory_tag_tag", ["tag", "memory_id"], unique=False)

    op.create_table(
        "ballast_session",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_active_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", outbox.columns.UtcDateTime(timezone=True), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "user_id", "session_id"),
    )
    op.create_table(
        "ballast_session_turn",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ballast_session_turn", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ballast_session_turn_owner", ["tenant", "user_id", "session_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ballast_session_turn", schema=None) as batch_op:
        batch_op.drop_index("ix_ballast_session_turn_owner")

    op.drop_table("ballast_session_turn")
    op.drop_table("ballast_session")
    with op.batch_alter_table("ballast_memory_tag", schema=None) as batch_op:
        batch_op.drop_index("ix_ballast_memory_tag_tag")

    op.drop_table("ballast_memory_tag")
    with op.batch_alter_table("ballast_memory", schema=None) as batch_op:
        batch_op.drop_index("ux_ballast_memory_key")
        batch_op.drop_index("ix_ballast_memory_tenant")

    op.drop_table("ballast_memory")
