"""The journal of agent runs: each step's request and outcome, written before the run goes on.

A run that is executed again (after a crash, a redelivery, or for replay)
loads its journal once and takes the outcome of every step already recorded
instead of performing it again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, inspect, update
from sqlalchemy import exc as sa_exc
from sqlmodel import col, select

from contracts.wire import utc_now
from outbox.database import Database
from outbox.errors import DatabaseError
from outbox.tables import JournalEntry
from outbox.unit_of_work import UnitOfWork


class StepStatus(StrEnum):
    PENDING = "pending"
    """Requested (a tool call or child task is out), no outcome yet."""
    COMPLETED = "completed"
    """Finished with a value."""
    FAILED = "failed"
    """Finished with an error that repeating the step cannot change."""


# Built once: every agent run starts with this read, and building the statement (and its
# cache key) cost as much as running it.
_JOURNAL_OF = (
    select(JournalEntry)
    .where(col(JournalEntry.task_id) == bindparam("task_id"))
    .order_by(col(JournalEntry.seq))
)


async def load_journal(db: Database, task_id: str) -> dict[int, JournalEntry]:
    """Every recorded step of ``task_id`` by its sequence number."""
    try:
        async with db.session() as session:
            rows = await session.execute(_JOURNAL_OF, {"task_id": task_id})
            return {entry.seq: entry for entry in rows.scalars()}
    except sa_exc.SQLAlchemyError as exc:
        raise DatabaseError(f"reading the journal of {task_id} failed: {exc}") from exc


RUN_SEQ = 0
"""Sequence of a run's own entry: who asked, what, the caps, and how the task ended."""


def record_step(
    uow: UnitOfWork,
    *,
    task_id: str,
    seq: int,
    kind: str,
    name: str,
    request: Any,
    status: StepStatus,
    outcome: Any = None,
    usage: dict[str, Any] | None = None,
    started_at: datetime | None = None,
) -> JournalEntry:
    """Add a step to the journal, committed with ``uow``; it started now unless ``started_at``.

    The entry returned is made as the ORM makes one it loads: SQLModel's constructor,
    which runs for every field, took about 30 us, a quarter of an agent's own CPU per
    step, for values that are all given here.
    """
    now = utc_now()
    values = {
        "task_id": task_id,
        "seq": seq,
        "kind": kind,
        "name": name,
        "request": request,
        "status": status.value,
        "outcome": outcome,
        "usage": usage,
        "started_at": started_at or now,
        "finished_at": None if status is StepStatus.PENDING else now,
    }
    uow.insert(JournalEntry, values)
    entry = _NEW_ENTRY()
    entry.__dict__.update(values)
    return entry


_NEW_ENTRY: Callable[[], JournalEntry] = inspect(JournalEntry).class_manager.new_instance
"""A `JournalEntry` with the ORM's state and no values (what loading a row starts with)."""


_T = JournalEntry.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation
_PENDING = (
    (_T.c.task_id == bindparam("b_task_id"))
    & (_T.c.seq == bindparam("b_seq"))
    & (_T.c.status == StepStatus.PENDING.value)
)
_FINISH = (
    update(_T)
    .where(_PENDING)
    .values(
        status=bindparam("b_status"), outcome=bindparam("b_outcome"), finished_at=bindparam("b_at")
    )
)
_FINISH_WITH_USAGE = _FINISH.values(usage=bindparam("b_usage"))


def finish_step(
    uow: UnitOfWork,
    *,
    task_id: str,
    seq: int,
    status: StepStatus,
    outcome: Any,
    usage: dict[str, Any] | None = None,
) -> None:
    """Record the outcome of a pending step, committed with ``uow``."""
    params = {
        "b_task_id": task_id,
        "b_seq": seq,
        "b_status": status.value,
        "b_outcome": outcome,
        "b_at": utc_now(),
    }
    if usage is None:
        uow.update(_FINISH, params)
    else:
        uow.update(_FINISH_WITH_USAGE, params | {"b_usage": usage})
