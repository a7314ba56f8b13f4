"""Retention prunes sent outbox rows and finished journals by age, and nothing else."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select

from contracts.wire import utc_now
from outbox import Database, JournalEntry, OutboxMessage, UnitOfWork
from outbox import memory as store
from outbox.memory import MemoryOwner, Scope
from outbox.retention import RetentionPolicy, prune
from outbox.sessions import SessionLifetime, SessionOwner, append_turns, close_session
from outbox.tables import BudgetAccount, SessionTurn


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


async def test_prune_removes_ended_memory_and_closed_sessions_after_their_time(
    db: Database,
) -> None:
    now = utc_now()
    owner = MemoryOwner(Scope.USER, "acme", ("alice",))
    async with UnitOfWork(db) as uow:
        for key, expires in (("old-expiry", now - timedelta(days=40)), ("live", None)):
            await store.put(
                uow, owner, key, 1, source="t", tags=("doc:x",), expires_at=expires, now=now
            )
        await store.put(uow, owner, "dropped", 1, source="t", tags=(), expires_at=None, now=now)
        await store.invalidate(
            uow, owner, key="dropped", reason="old", now=now - timedelta(days=40)
        )
        await store.put(uow, owner, "recent", 1, source="t", tags=(), expires_at=None, now=now)
        await store.invalidate(uow, owner, key="recent", reason="new", now=now - timedelta(days=1))
        lifetime = SessionLifetime(idle_timeout=timedelta(days=90), max_age=timedelta(days=90))
        for session, closed_days_ago in (("gone", 40), ("kept", 1), ("open", None)):
            who = SessionOwner("acme", "alice", session)
            await append_turns(uow, who, [("user", "hi")], task_id="t", lifetime=lifetime, now=now)
            if closed_days_ago is not None:
                await close_session(uow, who, "done", now - timedelta(days=closed_days_ago))

    pruned = await prune(db, RetentionPolicy(ended_for=timedelta(days=30), batch=2), now)
    assert (pruned.memory_entries, pruned.sessions) == (2, 1)
    async with UnitOfWork(db) as uow:
        left = await store.find(uow, now, tenant="acme", include_dead=True)
        assert sorted(r.key for r in left) == ["live", "recent"]
        assert await store.tags_of(uow, [r.id for r in left if r.id is not None]) != {}
        turns = (await uow.session.execute(select(col(SessionTurn.session_id)))).scalars()
        assert sorted(turns) == ["kept", "open"]
