"""``ctx.memory``: what an agent remembers, in explicit scopes, every read and write journaled.

The scopes are ``task``, ``session``, ``user``, ``tenant`` and ``agent`` (the agent's
memory within the task's tenant). Their owners come from the task being run (its
verified principal, its session), never from the agent's code: a run can reach
only the memory of the user, session and tenant it runs for.

Every call is a journaled step, so a re-executed or replayed run sees exactly
what the first execution saw, even if the memory changed since. Entries carry
their source, times, version and time to live; expired or invalidated entries
are never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, JsonValue

from contracts.tasks import TaskRequest
from contracts.wire import utc_now
from outbox import UnitOfWork
from outbox import memory as store
from outbox.memory import MemoryOwner, Scope
from outbox.tables import MemoryRecord
from services.errors import HandlerError
from services.steps import LocalSteps, StepKind, StepWork

ScopeName = Literal["task", "session", "user", "tenant", "agent"]


class MemoryEntry(BaseModel):
    """One remembered value, as the run saw it."""

    scope: Scope
    key: str
    value: JsonValue
    source: str
    """Where the value came from (by default the agent and task that wrote it)."""
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None


def owner_of(scope: Scope, task: TaskRequest, agent: str) -> MemoryOwner:
    """The owner of ``scope`` for a run of ``task``: its tenant, and the ids below it."""
    principal = task.principal
    if scope is Scope.TASK:
        return MemoryOwner(scope, principal.tenant, (task.task_id,))
    if scope is Scope.SESSION:
        if task.session_id is None:
            raise HandlerError(
                f"task {task.task_id} names no session, so it has no session memory; "
                "submit it with a session_id or use another scope",
                retryable=False,
            )
        return MemoryOwner(scope, principal.tenant, (principal.user_id, task.session_id))
    if scope is Scope.USER:
        return MemoryOwner(scope, principal.tenant, (principal.user_id,))
    if scope is Scope.AGENT:
        return MemoryOwner(scope, principal.tenant, (agent,))
    return MemoryOwner(scope, principal.tenant)


class Memory:
    """The memory of one run (``ctx.memory``)."""

    def __init__(self, steps: LocalSteps, task: TaskRequest, agent: str) -> None:
        self._steps = steps
        self._task = task
        self._agent = agent

    async def put(
        self,
        key: str,
        value: JsonValue,
        *,
        scope: ScopeName = "session",
        tags: Sequence[str] = (),
        ttl_s: float | None = None,
        source: str | None = None,
    ) -> MemoryEntry:
        """Remember ``value`` under ``key``; a new version if the key existed."""
        owner = self._owner(scope)
        origin = source or f"agent:{self._agent} task:{self._task.task_id}"
        request: JsonValue = {
            "scope": scope, "key": key, "value": value, "tags": list(tags),
            "ttl_s": ttl_s, "source": origin,
        }  # fmt: skip

        async def work(uow: UnitOfWork) -> JsonValue:
            now = utc_now()
            expires = now + timedelta(seconds=ttl_s) if ttl_s is not None else None
            record = await store.put(
                uow, owner, key, value,
                source=origin, tags=tuple(tags), expires_at=expires, now=now,
            )  # fmt: skip
            return _entry(record, sorted(set(tags)))

        return MemoryEntry.model_validate(await self._step("put", owner, key, request, work))

    async def get(self, key: str, *, scope: ScopeName = "session") -> MemoryEntry | None:
        """The live entry under ``key``, or None (never written, expired or invalidated)."""
        owner = self._owner(scope)

        async def work(uow: UnitOfWork) -> JsonValue:
            record = await store.get_live(uow, owner, key, utc_now())
            if record is None:
                return None
            assert record.id is not None
            return _entry(record, (await store.tags_of(uow, [record.id]))[record.id])

        found = await self._step("get", owner, key, {"scope": scope, "key": key}, work)
        return None if found is None else MemoryEntry.model_validate(found)

    async def list(
        self,
        *,
        scope: ScopeName = "session",
        tag: str | None = None,
        prefix: str | None = None,
        limit: int = 100,
    ) -> list[MemoryEntry]:
        """Live entries of the scope (optionally with ``tag`` or keys starting with ``prefix``)."""
        owner = self._owner(scope)
        request: JsonValue = {"scope": scope, "tag": tag, "prefix": prefix, "limit": limit}

        async def work(uow: UnitOfWork) -> JsonValue:
            records = await store.list_live(
                uow, owner, utc_now(), tag=tag, prefix=prefix, limit=limit
            )
            tags = await store.tags_of(uow, [r.id for r in records if r.id is not None])
            return [_entry(r, tags[r.id]) for r in records if r.id is not None]

        found = await self._step("list", owner, prefix or "", request, work)
        assert isinstance(found, list)
        return [MemoryEntry.model_validate(e) for e in found]

    async def delete(self, key: str, *, scope: ScopeName = "session") -> bool:
        """Forget ``key`` entirely; False if it was not there."""
        owner = self._owner(scope)

        async def work(uow: UnitOfWork) -> JsonValue:
            return await store.delete_key(uow, owner, key)

        return bool(await self._step("delete", owner, key, {"scope": scope, "key": key}, work))

    async def invalidate(
        self,
        *,
        scope: ScopeName = "session",
        key: str | None = None,
        tag: str | None = None,
        reason: str = "invalidated by the agent",
    ) -> int:
        """Invalidate the entry ``key``, the entries tagged ``tag``, or (neither) the whole
        scope; returns how many entries it invalidated."""
        owner = self._owner(scope)
        request: JsonValue = {"scope": scope, "key": key, "tag": tag, "reason": reason}

        async def work(uow: UnitOfWork) -> JsonValue:
            return await store.invalidate(
                uow, owner, key=key, tag=tag, reason=reason, now=utc_now()
            )

        invalidated = await self._step("invalidate", owner, key or tag or "", request, work)
        assert isinstance(invalidated, int)
        return invalidated

    def _owner(self, scope: ScopeName) -> MemoryOwner:
        return owner_of(Scope(scope), self._task, self._agent)

    async def _step(
        self, op: str, owner: MemoryOwner, key: str, request: JsonValue, work: StepWork
    ) -> JsonValue:
        name = f"{op} {owner.scope.value}/{key}"[:200]
        return await self._steps.local_step(StepKind.MEMORY, name, request, work)


def _entry(record: MemoryRecord, tags: list[str]) -> JsonValue:
    return MemoryEntry(
        scope=Scope(record.scope), key=record.key, value=record.value, source=record.source,
        tags=tags, version=record.version, created_at=record.created_at,
        updated_at=record.updated_at, expires_at=record.expires_at,
    ).model_dump(mode="json")  # fmt: skip
