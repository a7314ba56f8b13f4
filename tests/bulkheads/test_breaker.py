"""The breaker's state machine on one replica (sharing is tested with the services)."""

from __future__ import annotations

from bulkheads import Admission, BreakerPolicy, CircuitBreaker
from contracts import BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    policy = BreakerPolicy(window=4, minimum_calls=4, failure_rate=0.5, open_for_s=10)
    return CircuitBreaker("tool.x", policy, clock)


class TestClosed:
    def test_opens_when_the_failure_rate_is_reached_with_enough_calls(self) -> None:
        clock = Clock()
        b = breaker(clock)
        assert b.record(ok=False, trial=False) is None  # 1 of 1 failed, but too few calls
        assert b.record(ok=True, trial=False) is None
        assert b.record(ok=True, trial=False) is None
        opened = b.record(ok=False, trial=False)  # 2 of 4 failed
        assert opened is not None
        assert opened.state is BreakerState.OPEN
        assert opened.until == clock.now + 10
        assert opened.failure_rate == 0.5

    def test_stays_closed_below_the_rate(self) -> None:
        b = breaker(Clock())
        for ok in (True, True, True, False, True, True):
            assert b.record(ok=ok, trial=False) is None


class TestOpenAndHalfOpen:
    def test_rejects_while_open_then_offers_one_trial(self) -> None:
        clock = Clock()
        b = breaker(clock)
        for ok in (False, False, False, False):
            change = b.record(ok=ok, trial=False)
        assert change is not None
        b.adopt(change)
        assert b.admit() == (Admission.REJECT, None)
        clock.now += 10
        admission, proposal = b.admit()
        assert admission is Admission.TRIAL
        assert proposal is not None
        assert proposal.state is BreakerState.HALF_OPEN

    def test_a_successful_trial_closes_and_a_failed_one_reopens(self) -> None:
        clock = Clock()
        b = breaker(clock)
        closed = b.record(ok=True, trial=True)
        assert closed is not None
        assert closed.state is BreakerState.CLOSED
        reopened = b.record(ok=False, trial=True)
        assert reopened is not None
        assert reopened.state is BreakerState.OPEN
        assert reopened.until == clock.now + 10

    def test_outcomes_of_calls_admitted_before_another_replica_opened_it_are_ignored(
        self,
    ) -> None:
        clock = Clock()
        b = breaker(clock)
        opened = b.record(ok=False, trial=False)
        assert opened is None
        for ok in (False, False, False):
            change = b.record(ok=ok, trial=False)
        assert change is not None
        b.adopt(change)
        assert b.record(ok=False, trial=False) is None
