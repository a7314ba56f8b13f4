"""Ballast's tables: outbox, inbox, delivery failures, claims, journal, budget, audit.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 13:18:09.983362
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outbox.columns

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ballast_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("call_id", sa.String(length=200), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("verdict", sa.String(length=30), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ballast_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ballast_audit_task_id"), ["task_id"], unique=False)

    op.create_table(
        "ballast_budget",
        sa.Column("scope_key", sa.String(length=300), nullable=False),
        sa.Column("metric", sa.String(length=30), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope_key", "metric"),
    )
    op.create_table(
        "ballast_budget_reservation",
        sa.Column("step_key", sa.String(length=200), nullable=False),
        sa.Column("amounts", sa.JSON(), nullable=False),
        sa.Column("created_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("step_key"),
    )
    op.create_table(
        "ballast_claim",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("expires_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "key"),
    )
    op.create_table(
        "ballast_delivery_failure",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "key"),
    )
    op.create_table(
        "ballast_inbox",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("processed_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("consumer", "key"),
    )
    op.create_table(
        "ballast_journal",
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("started_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", outbox.columns.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "seq"),
    )
    op.create_table(
        "ballast_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", outbox.columns.UtcDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ballast_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ballast_outbox_message_id"), ["message_id"], unique=False
        )
        batch_op.create_index(
            "ix_ballast_outbox_unsent",
            ["id"],
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
        batch_op.drop_index(batch_op.f("ix_ballast_outbox_message_id"))

    op.drop_table("ballast_outbox")
    op.drop_table("ballast_journal")
    op.drop_table("ballast_inbox")
    op.drop_table("ballast_delivery_failure")
    op.drop_table("ballast_claim")
    op.drop_table("ballast_budget_reservation")
    op.drop_table("ballast_budget")
    with op.batch_alter_table("ballast_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ballast_audit_task_id"))

    op.drop_table("ballast_audit")
