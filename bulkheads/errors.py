"""Exceptions raised by ``bulkheads``.

::

    BulkheadError
    ├── HandlerTimeoutError (TimeoutError)   a handler ran past its pool's timeout (retryable)
    ├── LoopDetectedError                    a run repeats itself or keeps failing (not retryable)
    └── CircuitOpenError                     a breaker is open: fail fast, try later (retryable)
"""

from __future__ import annotations


class BulkheadError(Exception):
    """Root of the exceptions raised by ``bulkheads``."""

    retryable: bool = True
    """Whether the same work may succeed if tried again."""


class HandlerTimeoutError(BulkheadError, TimeoutError):
    """The handler did not finish within the pool's per-message timeout and was cancelled."""

    def __init__(self, pool: str, timeout_s: float) -> None:
        super().__init__(
            f"{pool}: handler exceeded its {timeout_s:g}s timeout and was cancelled; "
            "raise the pool's timeout_s if the work is legitimately slow"
        )
        self.pool = pool
        self.timeout_s = timeout_s


class LoopDetectedError(BulkheadError):
    """A run called the same tool with the same arguments, or failed, too often."""

    retryable = False


class CircuitOpenError(BulkheadError):
    """The breaker guarding a tool or model is open; the call was not made."""

    def __init__(self, breaker: str, retry_in_s: float) -> None:
        super().__init__(
            f"circuit breaker {breaker} is open; calls resume in about {retry_in_s:.0f}s"
        )
        self.breaker = breaker
        self.retry_in_s = retry_in_s
