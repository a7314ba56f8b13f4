"""Retention: prune what has served its purpose, in small batches, by policy.

- Sent outbox rows: once published they are only history; kept ``sent_for``.
- Journals of finished runs: kept ``journal_for`` after the run ended (trace and
  replay need them until then), with the task's own budget accounts. Runs that
  have not ended (waiting for a result or an approval) are never pruned.
- Ended state: memory entries invalidated, or expired, more than ``ended_for`` ago
  (with their tags), and sessions closed that long ago (with their turns). No run
  reads them any more; they are kept that long for the record.

Deletes go in batches of ``batch`` rows, each its own short transaction, so that
pruning a backlog of millions never holds a long lock; several replicas may
prune at once (a row is deleted once, the others find nothing).
The inbox, audit records and user budget accounts are kept: they carry
guarantees (no second effect, who was allowed what, spend) rather than history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exc, select
from sqlmodel import col

from outbox.database import Database
from outbox.errors import DatabaseError
from outbox.journal import RUN_SEQ
from outbox.tables import (
    BudgetAccount,
    JournalEntry,
    MemoryRecord,
    MemoryTag,
    OutboxMessage,
    SessionRecord,
    SessionTurn,
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    sent_for: timedelta = timedelta(days=1)
    journal_for: timedelta = timedelta(days=30)
    ended_for: timedelta = timedelta(days=30)
    batch: int = 5000


@dataclass(frozen=True, slots=True)
class Pruned:
    outbox_rows: int
    journal_tasks: int
    journal_rows: int
    memory_entries: int = 0
    sessions: int = 0


async def _prune_sent(db: Database, before: datetime, batch: int) -> int:
    total = 0
    while True:
        async with db.session() as session, session.begin():
            ids = (
                select(col(OutboxMessage.id))
                .where(col(OutboxMessage.sent_at).is_not(None), col(OutboxMessage.sent_at) < before)
                .order_by(col(OutboxMessage.id))
                .limit(batch)
            )
            found = list((await session.execute(ids)).scalars())
            if found:
                await session.execute(delete(OutboxMessage).where(col(OutboxMessage.id).in_(found)))
        total += len(found)
        if len(found) < batch:
            return total


async def _prune_journals(db: Database, before: datetime, batch: int) -> tuple[int, int]:
    tasks = rows = 0
    while True:
        async with db.session() as session, session.begin():
            ended = (
                select(col(JournalEntry.task_id))
                .where(
                    col(JournalEntry.seq) == RUN_SEQ,
                    col(JournalEntry.started_at) < before,
                    col(JournalEntry.finished_at).is_not(None),
                    col(JournalEntry.finished_at) < before,
                )
                .limit(max(1, batch // 20))
            )
            found = list((await session.execute(ended)).scalars())
            if found:
                result = await session.execute(
                    delete(JournalEntry).where(col(JournalEntry.task_id).in_(found))
                )
                rows += int(getattr(result, "rowcount", 0) or 0)
                await session.execute(
                    delete(BudgetAccount).where(
                        col(BudgetAccount.scope_key).in_([f"task:{t}" for t in found])
                    )
                )
        tasks += len(found)
        if len(found) < max(1, batch // 20):
            return tasks, rows


async def _prune_ended_memory(db: Database, before: datetime, batch: int) -> int:
    total = 0
    while True:
        async with db.session() as session, session.begin():
            ended = (
                select(col(MemoryRecord.id))
                .where(
                    (col(MemoryRecord.invalidated_at) < before)
                    | (col(MemoryRecord.expires_at) < before)
                )
                .limit(batch)
            )
            found = list((await session.execute(ended)).scalars())
            if found:
                await session.execute(delete(MemoryTag).where(col(MemoryTag.memory_id).in_(found)))
                await session.execute(delete(MemoryRecord).where(col(MemoryRecord.id).in_(found)))
        total += len(found)
        if len(found) < batch:
            return total


async def _prune_closed_sessions(db: Database, before: datetime, batch: int) -> int:
    total = 0
    limit = max(1, batch // 20)
    while True:
        async with db.session() as session, session.begin():
            closed = select(SessionRecord).where(col(SessionRecord.closed_at) < before).limit(limit)
            found = list((await session.execute(closed)).scalars())
            for record in found:
                await session.execute(
                    delete(SessionTurn).where(
                        col(SessionTurn.tenant) == record.tenant,
                        col(SessionTurn.user_id) == record.user_id,
                        col(SessionTurn.session_id) == record.session_id,
                    )
                )
                await session.delete(record)
        total += len(found)
        if len(found) < limit:
            return total


async def prune(db: Database, policy: RetentionPolicy, now: datetime) -> Pruned:
    """Delete sent outbox rows, finished journals and ended state older than ``policy``
    allows."""
    try:
        sent = await _prune_sent(db, now - policy.sent_for, policy.batch)
        tasks, rows = await _prune_journals(db, now - policy.journal_for, policy.batch)
        memory = await _prune_ended_memory(db, now - policy.ended_for, policy.batch)
        sessions = await _prune_closed_sessions(db, now - policy.ended_for, policy.batch)
    except (OSError, exc.SQLAlchemyError) as error:
        raise DatabaseError(f"pruning {db.safe_url} failed: {error}") from error
    return Pruned(
        outbox_rows=sent, journal_tasks=tasks, journal_rows=rows,
        memory_entries=memory, sessions=sessions,
    )  # fmt: skip
