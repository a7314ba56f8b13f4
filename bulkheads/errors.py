"""Exceptions raised by ``bulkheads``.

::

    BulkheadError
    └── HandlerTimeoutError (TimeoutError)   a handler ran past its pool's timeout (retryable)
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
