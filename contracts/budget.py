"""Budgets on the wire: caps a task carries, and the event sent when one is hit."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import Field

from contracts.wire import Name, TaskId, UtcDateTime, WireModel, utc_now


class BudgetMetric(StrEnum):
    """What a budget counts."""

    STEPS = "steps"
    """Every ``ctx`` call of an agent run: model, tool, child task, step."""
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    TOOL_CALLS = "tool_calls"
    COST_USD = "cost_usd"


class BudgetLimits(WireModel):
    """Hard caps; an unset field means no cap at this level."""

    steps: int | None = Field(default=None, ge=0)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    tool_calls: int | None = Field(default=None, ge=0)
    cost_usd: Decimal | None = Field(default=None, ge=0, decimal_places=6)

    def get(self, metric: BudgetMetric) -> int | Decimal | None:
        value: int | Decimal | None = getattr(self, metric.value)
        return value

    def lowered_by(self, other: BudgetLimits | None) -> BudgetLimits:
        """The stricter of the two for every metric (a task may lower, never raise)."""
        if other is None:
            return self
        merged = {}
        for metric in BudgetMetric:
            mine, theirs = self.get(metric), other.get(metric)
            candidates = [v for v in (mine, theirs) if v is not None]
            merged[metric.value] = min(candidates) if candidates else None
        return BudgetLimits.model_validate(merged)


class BudgetScope(StrEnum):
    """Whose spend a cap limits."""

    TASK = "task"
    SESSION = "session"
    USER = "user"
    USER_DAY = "user_day"


class BudgetExceeded(WireModel):
    """Published on ``ballast.event.budget.exceeded`` when a run is stopped by a cap."""

    task_id: TaskId
    agent: Name
    scope: BudgetScope
    scope_key: str = Field(description="The scope's identity, e.g. 'user_day:acme:u-1:2026-11-23'.")
    metric: BudgetMetric
    limit: Decimal
    spent: Decimal = Field(description="Spent and reserved before the refused step.")
    requested: Decimal = Field(description="What the refused step would have needed.")
    at: UtcDateTime = Field(default_factory=utc_now)
