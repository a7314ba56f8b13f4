"""Persistence: the transactional outbox, the consumer inbox, the relay.

Dependency rule: ``outbox`` imports ``contracts`` and nothing else of Ballast.
"""

from outbox.database import Database, sqlite_url
from outbox.errors import (
    AlreadyProcessedError,
    DatabaseError,
    OutboxError,
    PublishError,
)
from outbox.failures import record_failure
from outbox.publisher import JetStreamPublisher, Outgoing, Published
from outbox.relay import Relay, RelayConfig
from outbox.tables import DeliveryFailure, InboxEntry, JournalEntry, OutboxMessage
from outbox.unit_of_work import UnitOfWork

__all__ = [
    "AlreadyProcessedError",
    "Database",
    "DatabaseError",
    "DeliveryFailure",
    "InboxEntry",
    "JetStreamPublisher",
    "JournalEntry",
    "OutboxError",
    "OutboxMessage",
    "Outgoing",
    "PublishError",
    "Published",
    "Relay",
    "RelayConfig",
    "UnitOfWork",
    "record_failure",
    "sqlite_url",
]
