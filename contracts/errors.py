"""Errors: the wire error model, its codes, and the exceptions of this package.

The wire model (`ErrorInfo`) says whether retrying can help; every consumer
decides retry versus dead-letter from ``retryable`` alone.

Exceptions raised by ``contracts``::

    ContractError (ValueError)
    └── InvalidNameError        a name that cannot be a subject token
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, JsonValue

from contracts.wire import WireModel


class ErrorCode(StrEnum):
    """Stable machine-readable error codes. Never rename a member: clients match on them."""

    INVALID_MESSAGE = "invalid_message"
    """The payload is not valid JSON or does not match the schema. Never retried."""

    HANDLER_ERROR = "handler_error"
    """The agent or tool code raised. Retryable unless the code said otherwise."""

    TIMEOUT = "timeout"
    """The handler did not finish within its bulkhead's per-message timeout. Retryable."""

    DEADLINE_EXCEEDED = "deadline_exceeded"
    """The message's deadline passed before it could run. Never retried."""

    UNAVAILABLE = "unavailable"
    """A dependency (broker, database, provider) is unreachable. Retryable."""

    INTERNAL = "internal"
    """A bug in Ballast itself. Retryable, so a fixed deployment can still process it."""

    BUDGET_EXCEEDED = "budget_exceeded"
    """A hard budget cap would be crossed; ``details`` names the scope, metric, limit and spend."""

    LOOP_DETECTED = "loop_detected"
    """The run repeated the same call, or kept failing, more often than its loop guard allows."""

    NON_DETERMINISM = "non_determinism"
    """Re-executed agent code asked for a different step than its journal holds."""

    CIRCUIT_OPEN = "circuit_open"
    """A circuit breaker is open for the tool or model; retried after the breaker's pause."""

    PROVIDER_ERROR = "provider_error"
    """The model provider refused the request; ``retryable`` says whether it may pass later."""

    UNAUTHENTICATED = "unauthenticated"
    """The principal is unsigned, expired, tampered with, or signed by an unknown key."""

    FORBIDDEN = "forbidden"
    """Authorization denied the call: allow-list, scopes or an argument policy."""

    APPROVAL_REQUIRED = "approval_required"
    """The call needs a human's approval first; the run waits for the decision."""

    APPROVAL_DENIED = "approval_denied"
    """A human denied the call, or nobody approved it in time."""

    TOO_LARGE = "too_large"
    """The message or the conversation is larger than allowed."""

    SESSION_CLOSED = "session_closed"
    """The task's session was closed or has expired; the client starts a new session."""


class ErrorInfo(WireModel):
    """What went wrong, in a form a client in any language can act on."""

    code: ErrorCode
    message: str = Field(description="Human-readable explanation; says what to do where possible.")
    retryable: bool = Field(description="True when the same message may succeed if tried again.")
    details: dict[str, JsonValue] = Field(
        default_factory=dict, description="Extra context, such as the exception type."
    )

    @classmethod
    def from_exception(cls, exc: BaseException, *, code: ErrorCode, retryable: bool) -> ErrorInfo:
        """Describe an exception without its traceback (tracebacks belong in logs)."""
        details: dict[str, Any] = {"exception": type(exc).__name__}
        return cls(
            code=code, message=str(exc) or type(exc).__name__, retryable=retryable, details=details
        )


class ContractError(ValueError):
    """Root of the exceptions raised by ``contracts``; also a ``ValueError``."""


class InvalidNameError(ContractError):
    """A name that cannot be used as a NATS subject token."""
