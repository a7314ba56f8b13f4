"""Circuit breakers: stop calling something that keeps failing, and try again later.

A breaker is closed (calls pass, outcomes are counted in a window of the last
``window`` calls), open (calls fail fast until ``open_for_s`` has passed) or
half-open (one trial call decides: success closes it, failure opens it again).
It opens when at least ``minimum_calls`` outcomes are in the window and the
share of failures reaches ``failure_rate``.

This module is the state machine of one replica. Replicas share the state
through `services.breakers`: a breaker opened by one stops the others too.
Times are wall-clock seconds so they mean the same on every replica.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from contracts.breaker import BreakerState


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens and for how long."""

    window: int = 20
    """How many recent outcomes are counted."""
    minimum_calls: int = 5
    """No decision before this many outcomes are in the window."""
    failure_rate: float = 0.5
    """The breaker opens when this share of the window failed."""
    open_for_s: float = 30.0
    """How long an open breaker fails fast before it lets a trial call through."""

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_calls <= self.window:
            raise ValueError("need 1 <= minimum_calls <= window")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.open_for_s <= 0:
            raise ValueError("open_for_s must be positive")


@dataclass(frozen=True, slots=True)
class Shared:
    """The state all replicas agree on."""

    state: BreakerState
    until: float = 0.0
    """Open: when a trial may start. Half-open: when an unfinished trial is given up."""
    failure_rate: float = 0.0


class Admission(Enum):
    ALLOW = "allow"
    TRIAL = "trial"
    """The one call that decides whether a half-open breaker closes."""
    REJECT = "reject"


class CircuitBreaker:
    """One replica's view of a breaker: the shared state plus its own window of outcomes."""

    def __init__(
        self, name: str, policy: BreakerPolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self.shared = Shared(BreakerState.CLOSED)
        self._outcomes: deque[bool] = deque(maxlen=policy.window)

    @property
    def state(self) -> BreakerState:
        return self.shared.state

    def failure_rate(self) -> float:
        if not self._outcomes:
            return 0.0
        return sum(1 for ok in self._outcomes if not ok) / len(self._outcomes)

    def admit(self) -> tuple[Admission, Shared | None]:
        """Whether a call may go now, and the shared state to propose if it starts a trial."""
        now = self._clock()
        if self.shared.state is BreakerState.CLOSED:
            return Admission.ALLOW, None
        if now < self.shared.until:
            return Admission.REJECT, None
        # Open and paused long enough, or a half-open trial that never reported back.
        trial = Shared(
            BreakerState.HALF_OPEN,
            until=now + self.policy.open_for_s,
            failure_rate=self.shared.failure_rate,
        )
        return Admission.TRIAL, trial

    def record(self, *, ok: bool, trial: bool) -> Shared | None:
        """Count an outcome; return the new shared state if this outcome changes it."""
        if trial:
            self._outcomes.clear()
            if ok:
                return Shared(BreakerState.CLOSED)
            return Shared(
                BreakerState.OPEN, until=self._clock() + self.policy.open_for_s, failure_rate=1.0
            )
        if self.shared.state is not BreakerState.CLOSED:
            return None  # a call admitted before another replica opened the breaker
        self._outcomes.append(ok)
        rate = self.failure_rate()
        if len(self._outcomes) >= self.policy.minimum_calls and rate >= self.policy.failure_rate:
            self._outcomes.clear()
            return Shared(
                BreakerState.OPEN, until=self._clock() + self.policy.open_for_s, failure_rate=rate
            )
        return None

    def adopt(self, shared: Shared) -> None:
        """Take the state agreed by all replicas (from the shared store)."""
        if shared.state is BreakerState.CLOSED and self.shared.state is not BreakerState.CLOSED:
            self._outcomes.clear()
        self.shared = shared
