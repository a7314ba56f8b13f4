"""What agents remember: entries per scope and owner, with source, lifetime and version.

An entry is addressed by its `MemoryOwner` (a scope and the ids that own it: the
tenant and user for the user scope, and so on) and a key. Writing a key again
raises its version; an entry past its ``expires_at``, or invalidated (by key, by
tag, or its whole scope), is never returned by `get_live` or `list_live`, but
stays in the table for the record until retention removes it.

The agent-facing functions take one owner each. `find` and `invalidate_where`
cross owners: they are for operators (``ballast memory``), not for agent runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlmodel import col

from outbox.conflict_insert import conflict_insert
from outbox.tables import MemoryRecord, MemoryTag
from outbox.unit_of_work import UnitOfWork

_M = MemoryRecord.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation
_T = MemoryTag.__table__  # type: ignore[attr-defined]


class Scope(StrEnum):
    """Who shares an entry; every scope lies inside one tenant."""

    TASK = "task"
    SESSION = "session"
    USER = "user"
    TENANT = "tenant"
    AGENT = "agent"
    """One agent's memory within a tenant (what it learnt serving that tenant)."""


@dataclass(frozen=True, slots=True)
class MemoryOwner:
    """A scope and the ids that own it, e.g. ``(USER, "acme", ("alice",))``."""

    scope: Scope
    tenant: str
    ids: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Canonical and unambiguous (JSON), whatever characters the ids hold."""
        return json.dumps([self.tenant, *self.ids], separators=(",", ":"))


def _owned(owner: MemoryOwner) -> tuple[ColumnElement[bool], ...]:
    return (_M.c.scope == owner.scope.value, _M.c.owner == owner.key)


def _tagged(tag: str) -> ColumnElement[bool]:
    tagged: ColumnElement[bool] = _M.c.id.in_(select(_T.c.memory_id).where(_T.c.tag == tag))
    return tagged


def _live(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        _M.c.invalidated_at.is_(None),
        (_M.c.expires_at.is_(None)) | (_M.c.expires_at > now),
    )


async def put(
    uow: UnitOfWork,
    owner: MemoryOwner,
    key: str,
    value: Any,
    *,
    source: str,
    tags: tuple[str, ...],
    expires_at: datetime | None,
    now: datetime,
) -> MemoryRecord:
    """Write ``key`` (a new version if it existed, live again if it was invalidated)."""
    fields = {
        "value": value, "source": source, "updated_at": now, "expires_at": expires_at,
        "invalidated_at": None, "invalidated_reason": None,
    }  # fmt: skip
    statement = conflict_insert(_M, is_sqlite=uow.is_sqlite).values(
        scope=owner.scope.value, owner=owner.key, tenant=owner.tenant, key=key,
        version=1, created_at=now, **fields,
    )  # fmt: skip
    written = await uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=["scope", "owner", "key"],
            set_={**fields, "version": _M.c.version + 1},
        ).returning(_M.c.id)
    )
    memory_id = written.scalar_one()
    await uow.session.execute(delete(MemoryTag).where(col(MemoryTag.memory_id) == memory_id))
    for tag in sorted(set(tags)):
        uow.session.add(MemoryTag(memory_id=memory_id, tag=tag))
    record = await uow.session.get(MemoryRecord, memory_id, populate_existing=True)
    assert record is not None
    return record


async def get_live(
    uow: UnitOfWork, owner: MemoryOwner, key: str, now: datetime
) -> MemoryRecord | None:
    rows = await uow.session.execute(
        select(MemoryRecord).where(*_owned(owner), _M.c.key == key, *_live(now))
    )
    return rows.scalar_one_or_none()


async def list_live(
    uow: UnitOfWork,
    owner: MemoryOwner,
    now: datetime,
    *,
    tag: str | None = None,
    prefix: str | None = None,
    limit: int = 100,
) -> list[MemoryRecord]:
    """Live entries of ``owner``, most recently written first."""
    query = select(MemoryRecord).where(*_owned(owner), *_live(now))
    if tag is not None:
        query = query.where(_tagged(tag))
    if prefix is not None:
        query = query.where(_M.c.key.startswith(prefix, autoescape=True))
    rows = await uow.session.execute(query.order_by(_M.c.updated_at.desc()).limit(limit))
    return list(rows.scalars())


async def by_id(uow: UnitOfWork, memory_id: int) -> MemoryRecord | None:
    """For operators: one entry, live or not."""
    return await uow.session.get(MemoryRecord, memory_id)


async def tags_of(uow: UnitOfWork, memory_ids: list[int]) -> dict[int, list[str]]:
    rows = await uow.session.execute(
        select(_T.c.memory_id, _T.c.tag).where(_T.c.memory_id.in_(memory_ids)).order_by(_T.c.tag)
    )
    tags: dict[int, list[str]] = {i: [] for i in memory_ids}
    for memory_id, tag in rows:
        tags[memory_id].append(tag)
    return tags


async def delete_key(uow: UnitOfWork, owner: MemoryOwner, key: str) -> bool:
    """Remove ``key`` of ``owner`` entirely; False if it was not there."""
    ids = select(_M.c.id).where(*_owned(owner), _M.c.key == key).scalar_subquery()
    await uow.session.execute(delete(MemoryTag).where(col(MemoryTag.memory_id) == ids))
    gone = await uow.session.execute(delete(MemoryRecord).where(*_owned(owner), _M.c.key == key))
    return bool(gone.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE


async def invalidate(
    uow: UnitOfWork,
    owner: MemoryOwner,
    *,
    key: str | None = None,
    tag: str | None = None,
    reason: str,
    now: datetime,
) -> int:
    """Invalidate ``owner``'s entry ``key``, its entries tagged ``tag``, or (neither) all."""
    return await _invalidate(uow, [*_owned(owner)], key=key, tag=tag, reason=reason, now=now)


async def invalidate_where(
    uow: UnitOfWork,
    *,
    tenant: str | None = None,
    scope: Scope | None = None,
    key: str | None = None,
    tag: str | None = None,
    reason: str,
    now: datetime,
) -> int:
    """For operators: invalidate across owners (e.g. everything tagged with a changed document)."""
    where = _operator_filter(tenant, scope)
    return await _invalidate(uow, where, key=key, tag=tag, reason=reason, now=now)


async def find(
    uow: UnitOfWork,
    now: datetime,
    *,
    tenant: str | None = None,
    scope: Scope | None = None,
    key: str | None = None,
    tag: str | None = None,
    include_dead: bool = False,
    limit: int = 100,
) -> list[MemoryRecord]:
    """For operators: entries across owners, most recently written first."""
    query = select(MemoryRecord).where(*_operator_filter(tenant, scope))
    if key is not None:
        query = query.where(_M.c.key == key)
    if tag is not None:
        query = query.where(_tagged(tag))
    if not include_dead:
        query = query.where(*_live(now))
    rows = await uow.session.execute(query.order_by(_M.c.updated_at.desc()).limit(limit))
    return list(rows.scalars())


def _operator_filter(tenant: str | None, scope: Scope | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if tenant is not None:
        where.append(_M.c.tenant == tenant)
    if scope is not None:
        where.append(_M.c.scope == scope.value)
    return where


async def _invalidate(
    uow: UnitOfWork,
    where: list[ColumnElement[bool]],
    *,
    key: str | None,
    tag: str | None,
    reason: str,
    now: datetime,
) -> int:
    if key is not None:
        where.append(_M.c.key == key)
    if tag is not None:
        where.append(_tagged(tag))
    done = await uow.session.execute(
        update(_M)
        .where(*where, _M.c.invalidated_at.is_(None))
        .values(invalidated_at=now, invalidated_reason=reason)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE
