"""The loop guard stops repeated identical calls and runs of failures."""

from __future__ import annotations

import pytest

from bulkheads import LoopDetectedError, LoopGuard, LoopGuardPolicy


class TestLoopGuard:
    def test_the_call_past_the_limit_of_identical_calls_is_refused(self) -> None:
        guard = LoopGuard(LoopGuardPolicy(max_identical_calls=2))
        guard.before_call("search", {"q": "x", "n": 1})
        guard.before_call("search", {"n": 1, "q": "x"})  # same arguments, other key order
        guard.before_call("search", {"q": "y"})  # other arguments count apart
        with pytest.raises(LoopDetectedError, match="same arguments more than 2 times"):
            guard.before_call("search", {"q": "x", "n": 1})

    def test_a_success_resets_the_count_of_failures_in_a_row(self) -> None:
        guard = LoopGuard(LoopGuardPolicy(max_consecutive_failures=2))
        for failed in (True, True, False, True, True):
            guard.after_step(failed=failed)
        with pytest.raises(LoopDetectedError, match="more than 2 steps failed in a row"):
            guard.after_step(failed=True)
