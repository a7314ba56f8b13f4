"""Documents and chunks for retrieval, with a full-text index over the chunks.

SQLite: an FTS5 table ``ballast_chunk_fts`` over ``ballast_chunk.text`` (external
content, kept in step by triggers). PostgreSQL: a generated ``tsvector`` column
``search`` with a GIN index. Neither is part of the SQLModel tables (the
migration environment leaves them out of comparisons).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 15:52:54.927146
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outbox.columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQLITE_FULL_TEXT = (
    "CREATE VIRTUAL TABLE ballast_chunk_fts USING fts5("
    "text, content='ballast_chunk', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER ballast_chunk_ai AFTER INSERT ON ballast_chunk BEGIN "
    "INSERT INTO ballast_chunk_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER ballast_chunk_ad AFTER DELETE ON ballast_chunk BEGIN "
    "INSERT INTO ballast_chunk_fts(ballast_chunk_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER ballast_chunk_au AFTER UPDATE ON ballast_chunk BEGIN "
    "INSERT INTO ballast_chunk_fts(ballast_chunk_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO ballast_chunk_fts(rowid, text) VALUES (new.id, new.text); END",
)
"""FTS5 over the chunks' text, English stemming, kept in step with the table."""


def upgrade() -> None:
    op.create_table(
        "ballast_chunk",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("document_id", sa.String(length=200), nullable=False),
        sa.Column("chunk_no", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ballast_chunk", schema=None) as batch_op:
        batch_op.create_index(
            "ux_ballast_chunk_position", ["tenant", "document_id", "chunk_no"], unique=True
        )

    op.create_table(
        "ballast_document",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("document_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("fetched_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", outbox.columns.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "document_id"),
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FULL_TEXT:
            op.execute(statement)
    else:
        op.execute(
            "ALTER TABLE ballast_chunk ADD COLUMN search tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_ballast_chunk_search ON ballast_chunk USING GIN (search)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS ballast_chunk_{trigger}")
        op.execute("DROP TABLE IF EXISTS ballast_chunk_fts")
    op.drop_table("ballast_document")
    with op.batch_alter_table("ballast_chunk", schema=None) as batch_op:
        batch_op.drop_index("ux_ballast_chunk_position")

    op.drop_table("ballast_chunk")
