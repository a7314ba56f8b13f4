"""Retry policy: exponential backoff with full jitter, bounded by a number of deliveries.

Retries happen through the broker (a negative acknowledgement with a delay), not
in a loop inside the worker, so a retry survives the worker's crash. Full
jitter (a delay drawn uniformly between zero and the exponential cap) spreads
the retries of many failed messages so they do not return as one wave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how late a failed message is tried again."""

    max_deliveries: int = 5
    """Deliveries in total, the first included. After the last one the message is dead-lettered."""
    initial_delay_s: float = 0.5
    """Upper bound of the delay after the first failure."""
    multiplier: float = 2.0
    """Growth of the bound per failure."""
    max_delay_s: float = 60.0
    """The bound never exceeds this."""

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {self.max_deliveries}")
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 <= initial_delay_s <= max_delay_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def delay_cap_s(self, delivery: int) -> float:
        """The largest delay after failed delivery number ``delivery`` (1-based)."""
        # Grow step by step and stop at the ceiling: a power could overflow a float.
        cap = self.initial_delay_s
        for _ in range(max(0, delivery - 1)):
            cap *= self.multiplier
            if cap >= self.max_delay_s:
                return self.max_delay_s
        return cap

    def backoff_s(self, delivery: int, rng: random.Random | None = None) -> float:
        """The delay before the next delivery after failed delivery ``delivery``: full jitter."""
        return (rng or random).uniform(0.0, self.delay_cap_s(delivery))

    def is_last(self, delivery: int) -> bool:
        """True when delivery number ``delivery`` is the last one allowed."""
        return delivery >= self.max_deliveries

    @property
    def server_max_deliver(self) -> int:
        """The consumer's ``max_deliver``: one more than ours.

        The handler dead-letters on its last delivery; if the process dies during
        that delivery, the spare one lets the next replica dead-letter it instead
        of the message being stranded in the stream.
        """
        return self.max_deliveries + 1
