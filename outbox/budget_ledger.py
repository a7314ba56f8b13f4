"""The budget ledger: reserve before a step, settle after, never past a cap.

Each (scope, metric) pair is one row holding what was spent and what open
steps have reserved. A reservation is one conditional update per capped pair,
``reserved + amount`` only where ``spent + reserved + amount <= limit``, inside
the step's transaction: on PostgreSQL the row lock serialises concurrent
replicas and the condition is re-checked on the locked row; on SQLite the
transaction holds the single writer lock. So concurrent runs can never, taken
together, spend past a cap. Reservations are keyed by step, so a step executed
again after a crash does not reserve twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlmodel import col

from contracts.wire import utc_now
from outbox.conflict_insert import conflict_insert
from outbox.errors import LimitReachedError
from outbox.tables import BudgetAccount, BudgetReservation
from outbox.unit_of_work import UnitOfWork

_A = BudgetAccount.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation


@dataclass(frozen=True, slots=True)
class Cap:
    """A hard limit of one metric in one scope."""

    scope_key: str
    metric: str
    limit: int


async def reserve(uow: UnitOfWork, step_key: str, caps: list[Cap], amounts: dict[str, int]) -> None:
    """Reserve ``amounts`` under every cap of their metric, or raise `LimitReachedError`.

    Nothing is reserved when any cap would be crossed (the caller's transaction
    rolls back). A step that already holds a reservation reserves nothing more.
    """
    if await uow.session.get(BudgetReservation, step_key) is not None:
        return
    held: dict[str, dict[str, int]] = {}
    for cap in caps:
        amount = amounts.get(cap.metric, 0)
        if amount <= 0:
            continue
        await uow.session.execute(
            conflict_insert(_A, is_sqlite=uow.is_sqlite)
            .values(scope_key=cap.scope_key, metric=cap.metric, spent=0, reserved=0)
            .on_conflict_do_nothing()
        )
        taken = await uow.session.execute(
            update(_A)
            .where(
                _A.c.scope_key == cap.scope_key,
                _A.c.metric == cap.metric,
                _A.c.spent + _A.c.reserved + amount <= cap.limit,
            )
            .values(reserved=_A.c.reserved + amount)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE
            used = await _used(uow, cap)
            raise LimitReachedError(cap.scope_key, cap.metric, cap.limit, used, amount)
        held.setdefault(cap.scope_key, {})[cap.metric] = amount
    uow.session.add(BudgetReservation(step_key=step_key, amounts=held, created_at=utc_now()))


async def settle(uow: UnitOfWork, step_key: str, actual: dict[str, int]) -> None:
    """Turn the step's reservation into spend of ``actual`` (zero releases it)."""
    reservation = await uow.session.get(BudgetReservation, step_key)
    if reservation is None:
        return
    for scope_key, metrics in reservation.amounts.items():
        for metric, reserved in metrics.items():
            await uow.session.execute(
                update(_A)
                .where(_A.c.scope_key == scope_key, _A.c.metric == metric)
                .values(reserved=_A.c.reserved - reserved, spent=_A.c.spent + actual.get(metric, 0))
            )
    await uow.session.delete(reservation)


async def spend(uow: UnitOfWork, scope_key: str) -> dict[str, tuple[int, int]]:
    """(spent, reserved) per metric in one scope."""
    rows = await uow.session.execute(
        select(BudgetAccount).where(col(BudgetAccount.scope_key) == scope_key)
    )
    return {row.metric: (row.spent, row.reserved) for row in rows.scalars()}


async def _used(uow: UnitOfWork, cap: Cap) -> int:
    row = await uow.session.get(BudgetAccount, (cap.scope_key, cap.metric))
    return 0 if row is None else row.spent + row.reserved
