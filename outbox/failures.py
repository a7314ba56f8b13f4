"""Failed deliveries, remembered across replicas and restarts.

JetStream counts deliveries but not when the first failure happened; a dead
letter reports both, so each failed attempt is upserted here.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from contracts.wire import utc_now
from outbox.conflict_insert import conflict_insert
from outbox.errors import DatabaseError
from outbox.tables import DeliveryFailure
from outbox.unit_of_work import UnitOfWork


async def record_failure(uow: UnitOfWork, consumer: str, key: str, error: str) -> DeliveryFailure:
    """Count one more failed attempt of ``key`` at ``consumer`` (committed with ``uow``)."""
    now = utc_now()
    table = DeliveryFailure.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation
    stmt = (
        conflict_insert(table, is_sqlite=uow.is_sqlite)
        .values(
            consumer=consumer,
            key=key,
            attempts=1,
            first_failure_at=now,
            last_failure_at=now,
            last_error=error,
        )
        .on_conflict_do_update(
            index_elements=["consumer", "key"],
            set_={
                "attempts": table.c.attempts + 1,
                "last_failure_at": now,
                "last_error": error,
            },
        )
        .returning(*table.c)
    )
    try:
        row = (await uow.session.execute(stmt)).one()
    except sa_exc.SQLAlchemyError as exc:
        raise DatabaseError(f"recording a failed delivery failed: {exc}") from exc
    return DeliveryFailure.model_validate(row._asdict())
