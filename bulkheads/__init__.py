"""Isolation and limits: worker pools, timeouts, retry with backoff.

Dependency rule: ``bulkheads`` imports ``contracts`` and nothing else of Ballast.
"""

from bulkheads.errors import BulkheadError, HandlerTimeoutError
from bulkheads.pool import PoolConfig, WorkerPool
from bulkheads.retry import RetryPolicy

__all__ = [
    "BulkheadError",
    "HandlerTimeoutError",
    "PoolConfig",
    "RetryPolicy",
    "WorkerPool",
]
