"""Journal indexes for listing runs and model calls by time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 13:18:24.889852
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ballast_journal", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ballast_journal_kind_started", ["kind", "started_at"], unique=False
        )
        batch_op.create_index("ix_ballast_journal_seq_started", ["seq", "started_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ballast_journal", schema=None) as batch_op:
        batch_op.drop_index("ix_ballast_journal_seq_started")
        batch_op.drop_index("ix_ballast_journal_kind_started")
