"""Failed deliveries, remembered across replicas and restarts.

JetStream counts deliveries but not when the first failure happened; a dead
letter reports both, so each failed attempt is upserted here.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from contracts.wire import utc_now
from outbox.database import Database
from outbox.errors import DatabaseError
from outbox.tables import DeliveryFailure


async def record_failure(db: Database, consumer: str, key: str, error: str) -> DeliveryFailure:
    """Count one more failed attempt of ``key`` at ``consumer`` and return the totals."""
    now = utc_now()
    dialect_insert = sqlite.insert if db.is_sqlite else postgresql.insert
    table = DeliveryFailure.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation
    stmt = (
        dialect_insert(table)
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
        async with db.session() as session:
            row = (await session.execute(stmt)).one()
            await session.commit()
    except sa_exc.SQLAlchemyError as exc:
        raise DatabaseError(f"recording a failed delivery failed: {exc}") from exc
    return DeliveryFailure.model_validate(row._asdict())
