"""The retry policy: exponential caps, full jitter, a bounded number of deliveries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkheads import RetryPolicy


class TestBackoff:
    def test_caps_grow_exponentially_up_to_the_ceiling(self) -> None:
        policy = RetryPolicy(initial_delay_s=0.5, multiplier=2, max_delay_s=3)
        assert [policy.delay_cap_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]

    @given(delivery=st.integers(min_value=1, max_value=500), seed=st.integers())
    def test_every_delay_lies_between_zero_and_its_cap(self, delivery: int, seed: int) -> None:
        policy = RetryPolicy(initial_delay_s=0.1, multiplier=3, max_delay_s=30)
        delay = policy.backoff_s(delivery, random.Random(seed))
        assert 0 <= delay <= policy.delay_cap_s(delivery) <= 30

    def test_jitter_spreads_delays_over_the_whole_range(self) -> None:
        """Full jitter: draws cover the low and the high end of [0, cap]."""
        policy = RetryPolicy(initial_delay_s=1, multiplier=1, max_delay_s=1)
        rng = random.Random(1)
        draws = [policy.backoff_s(1, rng) for _ in range(2000)]
        assert min(draws) < 0.05
        assert max(draws) > 0.95


class TestDeliveries:
    def test_the_last_delivery_is_known_and_the_server_gets_one_spare(self) -> None:
        policy = RetryPolicy(max_deliveries=3)
        assert [policy.is_last(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
        assert policy.server_max_deliver == 4

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_deliveries": 0},
            {"initial_delay_s": -1},
            {"initial_delay_s": 5, "max_delay_s": 1},
            {"multiplier": 0.5},
        ],
    )
    def test_impossible_policies_are_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match=r"must|need"):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]
