"""Retention prunes sent outbox rows and finished journals by age, and nothing else."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select

from contracts.wire import utc_now
from outbox import Database, JournalEntry, OutboxMessage
from outbox.retention import RetentionPolicy, prune
from outbox.tables import BudgetAccount


def _row(n: int, *, sent_days_ago: float | None) -> OutboxMessage:
    now = utc_now()
    return OutboxMessage(
        message_id=f"m{n}",
        subject="s",
        payload=b"x",
        headers={},
        created_at=now - timedelta(days=3),
        sent_at=None if sent_days_ago is None else now - timedelta(days=sent_days_ago),
    )


def _run(task_id: str, *, ended_days_ago: float | None) -> list[JournalEntry]:
    now = utc_now()
    started = now - timedelta(days=(ended_days_ago or 0) + 1)
    ended = None if ended_days_ago is None else now - timedelta(days=ended_days_ago)
    return [
        JournalEntry(task_id=task_id, seq=seq, kind="run" if seq == 0 else "tool", name="x",
                     status="completed", started_at=started, finished_at=ended)
        for seq in range(3)
    ]  # fmt: skip


async def test_prune_keeps_unsent_rows_recent_rows_and_unfinished_runs(db: Database) -> None:
    async with db.session() as session, session.begin():
        session.add_all(
            [_row(n, sent_days_ago=2) for n in range(7)]
            + [_row(100, sent_days_ago=0.1), _row(101, sent_days_ago=None)]
        )
        for task_id, ended in (("old", 40.0), ("recent", 2.0), ("waiting", None)):
            session.add_all(_run(task_id, ended_days_ago=ended))
            session.add(BudgetAccount(scope_key=f"task:{task_id}", metric="steps", spent=2))
        session.add(BudgetAccount(scope_key="user:u", metric="steps", spent=9))

    policy = RetentionPolicy(sent_for=timedelta(days=1), journal_for=timedelta(days=30), batch=3)
    pruned = await prune(db, policy, utc_now())
    assert (pruned.outbox_rows, pruned.journal_tasks, pruned.journal_rows) == (7, 1, 3)

    async with db.session() as session:
        left = (await session.execute(select(col(OutboxMessage.message_id)))).scalars().all()
        tasks = (await session.execute(select(col(JournalEntry.task_id)).distinct())).scalars()
        accounts = (await session.execute(select(col(BudgetAccount.scope_key)))).scalars()
        assert sorted(left) == ["m100", "m101"], "unsent and recently sent rows stay"
        assert sorted(tasks) == ["recent", "waiting"], "a run that has not ended is never pruned"
        assert sorted(accounts) == ["task:recent", "task:waiting", "user:u"]

    again = await prune(db, policy, utc_now())
    assert (again.outbox_rows, again.journal_tasks) == (0, 0)
