"""Model prices, for the cost of each model call and the cost caps of budgets."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

MICRO = 1_000_000
"""The ledger counts cost in micro-dollars (integers add up exactly)."""


class ModelPrice(BaseModel):
    """Dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)

    def cost_micro_usd(self, input_tokens: int, output_tokens: int) -> int:
        """Cost in micro-dollars, rounded up (a cap is never undercounted)."""
        # tokens / 1e6 * usd_per_mtok * 1e6 micro-dollars per dollar
        return math.ceil(
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        )


DEFAULT_PRICES: dict[str, ModelPrice] = {
    # The demo's scripted models carry a price so that cost shows up in budgets and traces.
    "scripted-triage": ModelPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    "scripted-research": ModelPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
}
