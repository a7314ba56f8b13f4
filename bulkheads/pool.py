"""Worker pools: one per handler, so a slow or failing handler cannot starve another.

A pool bounds how many messages of one handler run at once and how long each
may run. The broker side is bounded to match: each replica asks the stream only
for messages its pool can start (services.pull_flow), and the handler's JetStream
consumer, shared by every replica, admits at most one pool's worth per replica
(see `PoolConfig.max_ack_pending`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bulkheads.errors import HandlerTimeoutError

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """The size and time limits of one handler's pool."""

    size: int = 8
    """Messages of this handler processed at once (and taken from the broker at once)."""
    timeout_s: float = 30.0
    """Longest time one message may run before it is cancelled and counted as a failure."""
    max_replicas: int = 16
    """Replicas of the service that can be busy at once; raise it before running more."""

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"pool size must be at least 1, got {self.size}")
        if self.timeout_s <= 0:
            raise ValueError(f"pool timeout_s must be positive, got {self.timeout_s}")
        if self.max_replicas < 1:
            raise ValueError(f"pool max_replicas must be at least 1, got {self.max_replicas}")

    @property
    def max_ack_pending(self) -> int:
        """The consumer's unacknowledged-message limit, shared by every replica.

        Each replica asks the server only for the slots its pool has free, so it
        holds at most its pool; the one more per replica is slack for a pull request
        that delivers after its replica counted it gone (a reconnection). A limit of
        one pool would make replicas split one pool between them (a second replica
        would slow the service down); the default of 1000 would hide a stuck service
        behind a silent backlog.
        """
        return (self.size + 1) * self.max_replicas


class WorkerPool:
    """Runs coroutines with bounded concurrency and a per-call timeout."""

    def __init__(self, name: str, config: PoolConfig) -> None:
        self.name = name
        self.config = config
        self._slots = asyncio.Semaphore(config.size)
        self.in_use = 0
        """Calls running now."""
        self.waiting = 0
        """Calls waiting for a free slot."""

    @property
    def size(self) -> int:
        return self.config.size

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work()`` in a slot, cancelling it after the pool's timeout.

        Raises `HandlerTimeoutError` on timeout; other exceptions pass through.
        """
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_use += 1
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await work()
        except TimeoutError as exc:
            if isinstance(exc, HandlerTimeoutError):
                raise
            raise HandlerTimeoutError(self.name, self.config.timeout_s) from exc
        finally:
            self.in_use -= 1
            self._slots.release()
