"""Claims: at most one worker processes a message at a time, across replicas.

JetStream redelivers a message whose worker went quiet, even if that worker is
only slow; the claim makes the second worker wait instead of running the same
call alongside. A claim lapses on its own, so a crashed worker blocks nothing
for longer than its lease.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from contracts.wire import utc_now
from outbox.tables import Claim
from outbox.unit_of_work import UnitOfWork

_T = Claim.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation


async def claim(uow: UnitOfWork, consumer: str, key: str, owner: str, lease: timedelta) -> bool:
    """Take the claim on ``key`` for ``owner`` unless another owner holds a live one."""
    now = utc_now()
    dialect_insert = sqlite.insert if uow.is_sqlite else postgresql.insert
    stmt = (
        dialect_insert(_T)
        .values(consumer=consumer, key=key, owner=owner, expires_at=now + lease)
        .on_conflict_do_update(
            index_elements=["consumer", "key"],
            set_={"owner": owner, "expires_at": now + lease},
            where=_T.c.expires_at < now,
        )
        .returning(_T.c.owner)
    )
    taken = (await uow.session.execute(stmt)).scalar_one_or_none()
    return bool(taken == owner)


async def renew(uow: UnitOfWork, consumer: str, key: str, owner: str, lease: timedelta) -> None:
    """Extend ``owner``'s claim (it is still working on the message)."""
    await uow.session.execute(
        update(Claim)
        .where(col(Claim.consumer) == consumer, col(Claim.key) == key, col(Claim.owner) == owner)
        .values(expires_at=utc_now() + lease)
    )


async def release(uow: UnitOfWork, consumer: str, key: str, owner: str) -> None:
    """Give the claim up (in the transaction that records the outcome)."""
    await uow.session.execute(
        delete(Claim).where(
            col(Claim.consumer) == consumer, col(Claim.key) == key, col(Claim.owner) == owner
        )
    )
