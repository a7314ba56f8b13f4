"""Isolation and limits: worker pools, timeouts, retry with backoff, loop guard, breakers.

Dependency rule: ``bulkheads`` imports ``contracts`` and nothing else of Ballast.
"""

from bulkheads.breaker import Admission, BreakerPolicy, CircuitBreaker, Shared
from bulkheads.errors import (
    BulkheadError,
    CircuitOpenError,
    HandlerTimeoutError,
    LoopDetectedError,
)
from bulkheads.loop_guard import LoopGuard, LoopGuardPolicy
from bulkheads.pool import PoolConfig, WorkerPool
from bulkheads.retry import RetryPolicy

__all__ = [
    "Admission",
    "BreakerPolicy",
    "BulkheadError",
    "CircuitBreaker",
    "CircuitOpenError",
    "HandlerTimeoutError",
    "LoopDetectedError",
    "LoopGuard",
    "LoopGuardPolicy",
    "PoolConfig",
    "RetryPolicy",
    "Shared",
    "WorkerPool",
]
