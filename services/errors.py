"""Exceptions raised by ``services``.

::

    BallastError
    ├── ConfigurationError (ValueError)   settings or declarations that cannot work
    ├── EmbeddedBrokerError               the embedded nats-server did not start
    ├── BrokerError                       the broker refused or did not answer
    ├── HandlerError                      raised by user code; says whether to retry
    ├── InvalidMessageError               a message that can never be processed as it is
    ├── DeadlineExceededError             the message's deadline passed before it ran
    └── TaskFailedError                   something an agent awaited failed for good
        ├── ToolCallError                 a tool call ended with an error result
        └── DelegationError               a child task ended failed
"""

from __future__ import annotations

from contracts.errors import ErrorInfo


class BallastError(Exception):
    """Root of the exceptions raised by ``services``."""


class ConfigurationError(BallastError, ValueError):
    """Settings or declarations that cannot work; the message says which and how to fix it."""


class EmbeddedBrokerError(BallastError):
    """The embedded nats-server could not be started or did not become ready."""


class BrokerError(BallastError):
    """The broker refused a request or did not answer in time."""


class TaskFailedError(BallastError):
    """Something an agent awaited failed for good; ``error`` is what the other side reported."""

    def __init__(self, message: str, error: ErrorInfo) -> None:
        super().__init__(message)
        self.error = error


class ToolCallError(TaskFailedError):
    """A tool call ended with an error result (after the tool's own retries)."""


class DelegationError(TaskFailedError):
    """A child task ended as failed."""


class HandlerError(BallastError):
    """Raised by agent or tool code to fail with a message and say whether a retry can help.

    Any other exception is treated as retryable.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class InvalidMessageError(BallastError):
    """A message that cannot be processed as it is: not JSON, wrong schema, wrong subject."""


class DeadlineExceededError(BallastError):
    """The message's deadline passed before it could run."""
