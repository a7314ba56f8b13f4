"""Budgets of an agent run: the caps that apply, and reserving against them.

An agent declares caps per task, session, user and user-day; a task can lower
its own per-task caps. Every step reserves what it may use before it runs
(a model call: its input estimate and ``max_tokens``; a tool call: one call) and
settles what it really used afterwards; `outbox.budget_ledger` makes that
atomic across replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from contracts.budget import BudgetExceeded, BudgetLimits, BudgetMetric, BudgetScope
from contracts.tasks import TaskRequest
from contracts.wire import utc_now
from outbox import UnitOfWork
from outbox.budget_ledger import Cap, reserve, settle
from outbox.errors import LimitReachedError
from services.errors import BudgetExceededError, ConfigurationError
from services.pricing import MICRO, ModelPrice


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetPolicy:
    """An agent's caps per scope. Unset metrics are not capped."""

    per_task: BudgetLimits = field(default_factory=BudgetLimits)
    per_session: BudgetLimits = field(default_factory=BudgetLimits)
    per_user: BudgetLimits = field(default_factory=BudgetLimits)
    per_user_day: BudgetLimits = field(default_factory=BudgetLimits)


Usage = dict[BudgetMetric, int]
"""Amounts per metric; cost in micro-dollars."""


class RunBudget:
    """The caps of one task's run, resolved to ledger scopes."""

    def __init__(self, policy: BudgetPolicy, task: TaskRequest) -> None:
        self.task = task
        principal = task.principal
        user = f"{principal.tenant}:{principal.user_id}"
        day = utc_now().date().isoformat()
        scopes: list[tuple[BudgetScope, str, BudgetLimits]] = [
            (BudgetScope.TASK, f"task:{task.task_id}", policy.per_task.lowered_by(task.budget)),
            (BudgetScope.USER, f"user:{user}", policy.per_user),
            (BudgetScope.USER_DAY, f"user_day:{user}:{day}", policy.per_user_day),
        ]
        if task.session_id:
            scopes.append(
                (BudgetScope.SESSION, f"session:{user}:{task.session_id}", policy.per_session)
            )
        self._scopes = {key: scope for scope, key, _ in scopes}
        self.caps = [
            Cap(key, metric.value, _ledger_amount(metric, limit))
            for _, key, limits in scopes
            for metric in BudgetMetric
            if (limit := limits.get(metric)) is not None
        ]

    @property
    def caps_cost(self) -> bool:
        return any(cap.metric == BudgetMetric.COST_USD.value for cap in self.caps)

    async def reserve(self, uow: UnitOfWork, step_key: str, amounts: Usage) -> None:
        """Reserve ``amounts`` for ``step_key`` in ``uow``; raise `BudgetExceededError` at a cap."""
        if not self.caps:
            return
        try:
            await reserve(uow, step_key, self.caps, {m.value: v for m, v in amounts.items()})
        except LimitReachedError as exc:
            metric = BudgetMetric(exc.metric)
            raise BudgetExceededError(
                BudgetExceeded(
                    task_id=self.task.task_id,
                    agent=self.task.agent,
                    scope=self._scopes[exc.scope_key],
                    scope_key=exc.scope_key,
                    metric=metric,
                    limit=_wire_amount(metric, exc.limit),
                    spent=_wire_amount(metric, exc.used),
                    requested=_wire_amount(metric, exc.requested),
                )
            ) from exc

    async def settle(self, uow: UnitOfWork, step_key: str, actual: Usage) -> None:
        """Replace the step's reservation with what it used."""
        if not self.caps:
            return
        await settle(uow, step_key, {m.value: v for m, v in actual.items()})


def model_cost(
    price: ModelPrice | None, model: str, budget: RunBudget, tokens: tuple[int, int]
) -> int:
    """Micro-dollars for ``tokens`` (input, output) of ``model``; refuses an unpriced model
    when cost is capped, since a hard cap cannot be kept on an unknown price."""
    if price is None:
        if budget.caps_cost:
            raise ConfigurationError(
                f"no price for model {model!r} but a cost cap applies; "
                "add it to BALLAST_MODEL_PRICES"
            )
        return 0
    return price.cost_micro_usd(*tokens)


def _ledger_amount(metric: BudgetMetric, value: int | Decimal) -> int:
    return int(Decimal(value) * MICRO) if metric is BudgetMetric.COST_USD else int(value)


def _wire_amount(metric: BudgetMetric, amount: int) -> Decimal:
    return Decimal(amount) / MICRO if metric is BudgetMetric.COST_USD else Decimal(amount)
