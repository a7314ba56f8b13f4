"""Circuit breaker state changes, published on ``ballast.event.breaker.<state>``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from contracts.wire import UtcDateTime, WireModel, utc_now


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Calls pass; outcomes are counted."""
    OPEN = "open"
    """Calls fail fast until the pause is over."""
    HALF_OPEN = "half_open"
    """One trial call decides: success closes the breaker, failure opens it again."""


class BreakerChanged(WireModel):
    """A breaker moved from one state to another."""

    breaker: str = Field(description="What it guards, e.g. 'tool.create_ticket' or 'llm.gpt-4o'.")
    state: BreakerState
    previous: BreakerState
    failure_rate: float = Field(ge=0, le=1, description="In the window that decided it.")
    by: str = Field(description="The replica that changed it.")
    at: UtcDateTime = Field(default_factory=utc_now)
