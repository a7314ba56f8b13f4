"""Exceptions raised by ``outbox``.

::

    OutboxError
    ├── DatabaseError               the database failed or is unreachable (retryable)
    ├── AlreadyProcessedError       the inbox already holds this message (not an error for callers
    │                               that ack: the effect happened exactly once)
    ├── PublishError                the broker did not confirm a publish (retryable)
    ├── LimitReachedError           a budget cap would be crossed (not retryable)
    └── SessionClosedError          the session was closed or has expired (not retryable)
"""

from __future__ import annotations


class OutboxError(Exception):
    """Root of the exceptions raised by ``outbox``."""

    retryable: bool = True
    """Whether trying the same operation again may succeed."""


class DatabaseError(OutboxError):
    """The database failed or could not be reached; the transaction was rolled back."""


class AlreadyProcessedError(OutboxError):
    """Another delivery of the same message committed first; this one changed nothing."""

    retryable = False

    def __init__(self, consumer: str, key: str) -> None:
        super().__init__(f"{consumer} already processed {key}; this delivery was rolled back")
        self.consumer = consumer
        self.key = key


class PublishError(OutboxError):
    """The broker did not acknowledge a publish; the row stays unsent and is tried again."""


class LimitReachedError(OutboxError):
    """Reserving would take a budget scope past its cap; nothing was reserved."""

    retryable = False

    def __init__(self, scope_key: str, metric: str, limit: int, used: int, requested: int) -> None:
        super().__init__(
            f"{metric} cap of {scope_key} reached: {used} used of {limit}, {requested} more needed"
        )
        self.scope_key = scope_key
        self.metric = metric
        self.limit = limit
        self.used = used
        self.requested = requested


class SessionClosedError(OutboxError):
    """The session was closed, or outlived its idle timeout or maximum age: it is never
    loaded again, and the client starts a new one."""

    retryable = False

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(f"session {session_id} is closed ({reason}); start a new session")
        self.session_id = session_id
        self.reason = reason


class SchemaOutdatedError(DatabaseError):
    """The database's Ballast tables are older (or newer) than this code expects."""
