"""The loop guard: stops a run that keeps making the same call or keeps failing.

Models get stuck: they call the same tool with the same arguments again and
again, or retry a failing approach for ever. The guard counts per run, and a
re-executed run replays its steps in order, so the counts (and the decision)
come out the same every time.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from bulkheads.errors import LoopDetectedError


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopGuardPolicy:
    """Limits per run."""

    max_identical_calls: int = 3
    """How often one tool may be called with the same arguments in one run."""
    max_consecutive_failures: int = 3
    """How many steps in a row may fail before the run is stopped."""

    def __post_init__(self) -> None:
        if self.max_identical_calls < 1 or self.max_consecutive_failures < 1:
            raise ValueError("loop guard limits must be at least 1")


class LoopGuard:
    """Counts one run's calls and failures; raises `LoopDetectedError` past a limit."""

    def __init__(self, policy: LoopGuardPolicy) -> None:
        self.policy = policy
        self._calls: Counter[tuple[str, str]] = Counter()
        self._failures_in_a_row = 0

    def before_call(self, tool: str, args: object) -> None:
        """Count a call of ``tool`` with ``args``; refuse the one past the limit."""
        signature = (tool, json.dumps(args, sort_keys=True, default=str))
        self._calls[signature] += 1
        if self._calls[signature] > self.policy.max_identical_calls:
            raise LoopDetectedError(
                f"{tool} was called with the same arguments more than "
                f"{self.policy.max_identical_calls} times in this run"
            )

    def after_step(self, *, failed: bool) -> None:
        """Count a step's outcome; refuse to go on after too many failures in a row."""
        self._failures_in_a_row = self._failures_in_a_row + 1 if failed else 0
        if self._failures_in_a_row > self.policy.max_consecutive_failures:
            raise LoopDetectedError(
                f"more than {self.policy.max_consecutive_failures} steps failed in a row"
            )
