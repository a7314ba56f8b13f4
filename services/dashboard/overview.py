"""What the dashboard's front page shows, read from the broker and the database.

The broker parts (services, dead letters, breakers) and the database parts
(tasks, budgets, spend) are read independently: when the broker cannot be
reached the page still shows what the journal knows, with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from nats.js import JetStreamContext
from sqlmodel import col, select

from contracts.breaker import BreakerState
from contracts.wire import utc_now
from outbox import Database
from outbox.tables import BudgetAccount
from services.breakers import shared_breaker_states
from services.dead_letters import dead_letter_counts
from services.presence import running_services
from services.pricing import MICRO
from services.trace import CostLine, TaskSummary, costs, tasks

RECENT_TASKS = 50
SPEND_WINDOW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """A service summed over its running replicas."""

    service: str
    replicas: int
    pool_in_use: int
    pool_size: int
    pending: int
    in_flight: int

    @property
    def use_pct(self) -> float:
        return 100 * self.pool_in_use / self.pool_size if self.pool_size else 0.0


@dataclass(frozen=True, slots=True)
class BreakerRow:
    name: str
    state: str
    failure_rate: float
    retry_in_s: float | None


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Spend in one budget scope (a user, a user's day) for one metric."""

    scope: str
    metric: str
    spent: str
    reserved: str


@dataclass(slots=True)
class BrokerView:
    services: list[ServiceRow] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    breakers: list[BreakerRow] = field(default_factory=list)


@dataclass(slots=True)
class DatabaseView:
    tasks: list[TaskSummary]
    spend: list[SpendRow]
    costs_by_agent: list[CostLine]


async def broker_view(js: JetStreamContext) -> BrokerView:
    grouped: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for report in await running_services(js):
        row = grouped[report.service]
        row[0] += 1
        row[1] += report.pool_in_use
        row[2] += report.pool_size
        # Replicas share one durable consumer: its backlog is the same for all of them.
        row[3] = max(row[3], report.pending)
        row[4] = max(row[4], report.in_flight)
    services = [ServiceRow(name, *values) for name, values in sorted(grouped.items())]
    now = utc_now().timestamp()
    breakers = [
        BreakerRow(
            name=name,
            state=shared.state.value,
            failure_rate=shared.failure_rate,
            retry_in_s=max(0.0, shared.until - now) if shared.state is BreakerState.OPEN else None,
        )
        for name, shared in (await shared_breaker_states(js)).items()
    ]
    return BrokerView(services, await dead_letter_counts(js), breakers)


def _amount(metric: str, value: int) -> str:
    return f"${Decimal(value) / MICRO:.6f}" if metric == "cost_usd" else str(value)


async def database_view(
    db: Database, *, agent: str | None, status: str | None, user: str | None
) -> DatabaseView:
    async with db.session() as session:
        accounts = (
            (
                await session.execute(
                    select(BudgetAccount)
                    .where(~col(BudgetAccount.scope_key).startswith("task:"))
                    .order_by(col(BudgetAccount.scope_key), col(BudgetAccount.metric))
                    .limit(200)
                )
            )
            .scalars()
            .all()
        )
    spend = [
        SpendRow(a.scope_key, a.metric, _amount(a.metric, a.spent), _amount(a.metric, a.reserved))
        for a in accounts
    ]
    return DatabaseView(
        tasks=await tasks(db, agent=agent, status=status, user=user, limit=RECENT_TASKS),
        spend=spend,
        costs_by_agent=await costs(db, by="agent", since=utc_now() - SPEND_WINDOW),
    )
