"""Claims: at most one worker processes a message at a time, across replicas.

JetStream redelivers a message whose worker went quiet, even if that worker is
only slow; the claim makes the second worker wait instead of running the same
call alongside. A claim lapses on its own, so a crashed worker blocks nothing
for longer than its lease.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlmodel import col

from contracts.wire import utc_now
from outbox.admission import Admission, ClaimRequest
from outbox.database import Database
from outbox.staged_writes import StagedWrites
from outbox.tables import Claim
from outbox.unit_of_work import UnitOfWork


async def admit(db: Database, consumer: str, key: str, owner: str, lease: timedelta) -> Admission:
    """Whether ``key`` was processed at ``consumer``, else whether ``owner`` now holds its claim
    (unless another owner holds a live one); decided with the admissions of other workers in
    one transaction."""
    request = ClaimRequest(consumer, key, owner, utc_now() + lease)
    written = await db.group.commit(StagedWrites(claims=[request]))
    return written.admissions[0]


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
