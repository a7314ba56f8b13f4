"""The tables Ballast keeps beside a service's own data.

- ``ballast_outbox``: messages waiting to be published; written in the same
  transaction as the change that caused them, relayed to the broker afterwards.
- ``ballast_inbox``: messages a consumer has processed, written in the same
  transaction as the consumer's effect, so a redelivery (even after the broker's
  deduplication window) changes nothing.
- ``ballast_delivery_failure``: failed attempts per consumer and message, so a
  dead letter can say when the trouble started, whichever replica saw it.
- ``ballast_claim``: messages being processed now, so a second delivery waits.
- ``ballast_journal``: the steps of agent runs and their outcomes (durable execution).
- ``ballast_budget`` and ``ballast_budget_reservation``: the budget ledger.
- ``ballast_session`` and ``ballast_session_turn``: conversations, each owned by one
  tenant and user.
- ``ballast_memory`` and ``ballast_memory_tag``: what agents remember, per scope.
- ``ballast_document`` and ``ballast_chunk``: documents indexed for retrieval, per
  tenant, with a full-text index over the chunks (FTS5 on SQLite, tsvector on
  PostgreSQL; created by the migrations, see `outbox.retrieval`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlmodel import Field, SQLModel

from outbox.columns import UtcDateTime


class OutboxMessage(SQLModel, table=True):
    """A message to publish once its transaction has committed.

    A relay only ever looks for its own unsent rows, oldest first; a partial index
    (``ix_ballast_outbox_unsent``: producer, id WHERE sent_at IS NULL) keeps that fast
    however many sent rows pile up before retention prunes them. The migrations make it
    (0003), not this model: a dialect's keyword here (``postgresql_where``) would load
    that dialect in every process, about 2.3 MB for PostgreSQL's on SQLite.
    """

    __tablename__ = "ballast_outbox"

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    message_id: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    subject: str = Field(sa_column=Column(String(255), nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    producer: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    """The service whose relay publishes the row (None: any relay); see `Database.producer`."""


class InboxEntry(SQLModel, table=True):
    """Proof that ``consumer`` processed the message with idempotency key ``key``."""

    __tablename__ = "ballast_inbox"

    consumer: str = Field(sa_column=Column(String(200), primary_key=True))
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    processed_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    result: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class DeliveryFailure(SQLModel, table=True):
    """The failed attempts of one message at one consumer."""

    __tablename__ = "ballast_delivery_failure"

    consumer: str = Field(sa_column=Column(String(200), primary_key=True))
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    first_failure_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    last_failure_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    last_error: str = Field(sa_column=Column(Text, nullable=False))


class JournalEntry(SQLModel, table=True):
    """One step of an agent run: what was asked and how it ended.

    ``seq`` numbers the steps in the order the agent's code asked for them
    (compensations of a failed run use negative numbers). A re-executed run
    reads its steps back from here instead of running them again.
    """

    __tablename__ = "ballast_journal"
    __table_args__ = (
        # Listing runs (seq 0) by time, and model calls by time for costs, stay index
        # scans with millions of steps in the table.
        Index("ix_ballast_journal_seq_started", "seq", "started_at"),
        Index("ix_ballast_journal_kind_started", "kind", "started_at"),
    )

    task_id: str = Field(sa_column=Column(String(128), primary_key=True))
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    request: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: str = Field(sa_column=Column(String(20), nullable=False))
    outcome: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    usage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    started_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))


class Claim(SQLModel, table=True):
    """A message being processed right now, so that a second delivery does not run it too.

    A claim lapses at ``expires_at`` (the handler's timeout plus a margin), so a
    crashed worker's claim does not block the message for ever.
    """

    __tablename__ = "ballast_claim"

    consumer: str = Field(sa_column=Column(String(200), primary_key=True))
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    owner: str = Field(sa_column=Column(String(100), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class BudgetAccount(SQLModel, table=True):
    """Spend and open reservations of one metric in one scope (a task, a user-day, ...).

    Amounts are integers: tokens, calls, steps, or micro-dollars for cost.
    """

    __tablename__ = "ballast_budget"

    scope_key: str = Field(sa_column=Column(String(300), primary_key=True))
    metric: str = Field(sa_column=Column(String(30), primary_key=True))
    spent: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    reserved: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class BudgetReservation(SQLModel, table=True):
    """What one step reserved, per scope and metric, until it settles."""

    __tablename__ = "ballast_budget_reservation"

    step_key: str = Field(sa_column=Column(String(200), primary_key=True))
    amounts: dict[str, dict[str, int]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class AuditRecord(SQLModel, table=True):
    """An authorization decision of a tool host, kept with the call's outcome."""

    __tablename__ = "ballast_audit"

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    task_id: str = Field(sa_column=Column(String(128), nullable=False, index=True))
    call_id: str = Field(sa_column=Column(String(200), nullable=False))
    agent: str = Field(sa_column=Column(String(64), nullable=False))
    tool: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: str = Field(sa_column=Column(String(200), nullable=False))
    tenant: str = Field(sa_column=Column(String(200), nullable=False))
    verdict: str = Field(sa_column=Column(String(30), nullable=False))
    rule: str = Field(sa_column=Column(String(40), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))


class SessionRecord(SQLModel, table=True):
    """A conversation: owned by one tenant and user, named by the client.

    Its key includes the owner, so the same session id used by another user is
    another session. A closed session is never loaded again.
    """

    __tablename__ = "ballast_session"

    tenant: str = Field(sa_column=Column(String(200), primary_key=True))
    user_id: str = Field(sa_column=Column(String(200), primary_key=True))
    session_id: str = Field(sa_column=Column(String(128), primary_key=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    last_active_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    closed_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    closed_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class SessionTurn(SQLModel, table=True):
    """One message of a conversation, in the order it was added."""

    __tablename__ = "ballast_session_turn"
    __table_args__ = (
        Index("ix_ballast_session_turn_owner", "tenant", "user_id", "session_id", "id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    tenant: str = Field(sa_column=Column(String(200), nullable=False))
    user_id: str = Field(sa_column=Column(String(200), nullable=False))
    session_id: str = Field(sa_column=Column(String(128), nullable=False))
    task_id: str = Field(sa_column=Column(String(128), nullable=False))
    role: str = Field(sa_column=Column(String(20), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class MemoryRecord(SQLModel, table=True):
    """One remembered value: its scope and owner, where it came from, how long it holds.

    ``owner`` is the scope's identity as canonical JSON (``["tenant", "user"]`` for
    the user scope), so owners of different scopes never collide. ``version``
    counts the writes of the key; an invalidated or expired entry is kept for the
    record but never returned.
    """

    __tablename__ = "ballast_memory"
    __table_args__ = (
        Index("ux_ballast_memory_key", "scope", "owner", "key", unique=True),
        Index("ix_ballast_memory_tenant", "tenant", "updated_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    scope: str = Field(sa_column=Column(String(16), nullable=False))
    owner: str = Field(sa_column=Column(String(700), nullable=False))
    tenant: str = Field(sa_column=Column(String(200), nullable=False))
    key: str = Field(sa_column=Column(String(200), nullable=False))
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    source: str = Field(sa_column=Column(String(500), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    invalidated_at: datetime | None = Field(
        default=None, sa_column=Column(UtcDateTime, nullable=True)
    )
    invalidated_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class MemoryTag(SQLModel, table=True):
    """A tag of a memory entry (for example ``doc:kb-101``), to invalidate by tag."""

    __tablename__ = "ballast_memory_tag"
    __table_args__ = (Index("ix_ballast_memory_tag_tag", "tag", "memory_id"),)

    memory_id: int = Field(
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    tag: str = Field(sa_column=Column(String(200), primary_key=True))


class DocumentRecord(SQLModel, table=True):
    """A document indexed for retrieval: where it came from, whether it can be trusted,
    when it was fetched from its source and when it was indexed."""

    __tablename__ = "ballast_document"

    tenant: str = Field(sa_column=Column(String(200), primary_key=True))
    document_id: str = Field(sa_column=Column(String(200), primary_key=True))
    source: str = Field(sa_column=Column(String(200), nullable=False))
    trusted: bool = Field(sa_column=Column(Boolean, nullable=False))
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    chunks: int = Field(sa_column=Column(Integer, nullable=False))
    fetched_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    indexed_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class ChunkRecord(SQLModel, table=True):
    """One chunk of an indexed document, the unit that retrieval returns."""

    __tablename__ = "ballast_chunk"
    __table_args__ = (
        Index("ux_ballast_chunk_position", "tenant", "document_id", "chunk_no", unique=True),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    tenant: str = Field(sa_column=Column(String(200), nullable=False))
    document_id: str = Field(sa_column=Column(String(200), nullable=False))
    chunk_no: int = Field(sa_column=Column(Integer, nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
