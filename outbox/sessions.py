"""Conversations, stored per owner: a session is read and written only by its own user.

Every function takes the `SessionOwner` (tenant, user and session id) and
filters on all three, so knowing another user's session id reads nothing: there
is no call that reads across owners. The services build the owner from the
task's verified principal, never from what the agent's code passes.

A session ends when it is closed, or when it outlives its idle timeout or its
maximum age (`SessionLifetime`; it is then closed when first found so); from then
on loading or extending it raises `SessionClosedError`, so its turns never reach a
prompt again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlmodel import col

from outbox.conflict_insert import conflict_insert
from outbox.errors import SessionClosedError
from outbox.tables import SessionRecord, SessionTurn
from outbox.unit_of_work import UnitOfWork

_S = SessionRecord.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation


@dataclass(frozen=True, slots=True)
class SessionOwner:
    """Whose session: the principal's tenant and user, and the client's session id."""

    tenant: str
    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionLifetime:
    """How long a session lives: since its last turn, and at most since it began."""

    idle_timeout: timedelta
    max_age: timedelta


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str
    task_id: str
    created_at: datetime


async def load_turns(
    uow: UnitOfWork, owner: SessionOwner, lifetime: SessionLifetime, now: datetime
) -> list[Turn]:
    """The session's turns, oldest first; none for a session not begun yet."""
    record = await _live_record(uow, owner, lifetime, now)
    if record is None:
        return []
    rows = await uow.session.execute(
        select(SessionTurn)
        .where(
            col(SessionTurn.tenant) == owner.tenant,
            col(SessionTurn.user_id) == owner.user_id,
            col(SessionTurn.session_id) == owner.session_id,
        )
        .order_by(col(SessionTurn.id))
    )
    return [Turn(t.role, t.content, t.task_id, t.created_at) for t in rows.scalars()]


async def append_turns(
    uow: UnitOfWork,
    owner: SessionOwner,
    turns: list[tuple[str, str]],
    *,
    task_id: str,
    lifetime: SessionLifetime,
    now: datetime,
) -> None:
    """Add ``(role, content)`` turns, beginning the session if needed."""
    await uow.session.execute(
        conflict_insert(_S, is_sqlite=uow.is_sqlite)
        .values(
            tenant=owner.tenant,
            user_id=owner.user_id,
            session_id=owner.session_id,
            created_at=now,
            last_active_at=now,
        )
        .on_conflict_do_nothing()
    )
    await _live_record(uow, owner, lifetime, now)
    for role, content in turns:
        uow.session.add(
            SessionTurn(
                tenant=owner.tenant,
                user_id=owner.user_id,
                session_id=owner.session_id,
                task_id=task_id,
                role=role,
                content=content,
                created_at=now,
            )
        )
    await uow.session.execute(update(_S).where(*_is(owner)).values(last_active_at=now))


async def close_session(uow: UnitOfWork, owner: SessionOwner, reason: str, now: datetime) -> bool:
    """Close the session for good; False if it did not exist or was closed already."""
    closed = await uow.session.execute(
        update(_S)
        .where(*_is(owner), _S.c.closed_at.is_(None))
        .values(closed_at=now, closed_reason=reason)
    )
    return bool(closed.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


async def _live_record(
    uow: UnitOfWork, owner: SessionOwner, lifetime: SessionLifetime, now: datetime
) -> SessionRecord | None:
    """The session's record; `SessionClosedError` if it has ended.

    A session found past its lifetime is closed in ``uow`` before the error is raised:
    commit the transaction to keep that.
    """
    record = await uow.session.get(
        SessionRecord, (owner.tenant, owner.user_id, owner.session_id), populate_existing=True
    )
    if record is None:
        return None
    if record.closed_at is not None:
        raise SessionClosedError(owner.session_id, record.closed_reason or "closed")
    ended = None
    if now - record.last_active_at > lifetime.idle_timeout:
        ended = f"idle for more than {lifetime.idle_timeout}"
    elif now - record.created_at > lifetime.max_age:
        ended = f"older than {lifetime.max_age}"
    if ended is not None:
        # Closed for good, so that a longer lifetime configured later cannot revive it;
        # the caller commits this with its record of the refusal.
        await close_session(uow, owner, f"expired: {ended}", now)
        raise SessionClosedError(owner.session_id, ended)
    return record


def _is(owner: SessionOwner) -> tuple[ColumnElement[bool], ...]:
    return (
        _S.c.tenant == owner.tenant,
        _S.c.user_id == owner.user_id,
        _S.c.session_id == owner.session_id,
    )
