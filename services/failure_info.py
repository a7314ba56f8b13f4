"""How an exception from a handler becomes the wire error, and whether it is retried."""

from __future__ import annotations

from pydantic import ValidationError

from bulkheads import BulkheadError, CircuitOpenError, HandlerTimeoutError, LoopDetectedError
from contracts.errors import ErrorCode, ErrorInfo
from outbox import OutboxError
from services.errors import (
    BudgetExceededError,
    DeadlineExceededError,
    HandlerError,
    InvalidMessageError,
    ModelError,
    NonDeterminismError,
    SessionEndedError,
    TaskFailedError,
    TooLargeError,
)

_RULES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], ErrorCode, bool], ...] = (
    (TooLargeError, ErrorCode.TOO_LARGE, False),
    ((InvalidMessageError, ValidationError), ErrorCode.INVALID_MESSAGE, False),
    (DeadlineExceededError, ErrorCode.DEADLINE_EXCEEDED, False),
    (HandlerTimeoutError, ErrorCode.TIMEOUT, True),
    (CircuitOpenError, ErrorCode.CIRCUIT_OPEN, True),
    (LoopDetectedError, ErrorCode.LOOP_DETECTED, False),
    (NonDeterminismError, ErrorCode.NON_DETERMINISM, False),
    (SessionEndedError, ErrorCode.SESSION_CLOSED, False),
    # What the run waited for already used up its own retries: repeating it cannot help.
    (TaskFailedError, ErrorCode.HANDLER_ERROR, False),
)
"""Exception types whose code and retryability are fixed, checked in order."""


def describe_failure(exc: Exception) -> ErrorInfo:
    """The wire error for ``exc``, with the retry decision in ``retryable``."""
    if isinstance(exc, BudgetExceededError):
        return exc.info()
    for types, code, retryable in _RULES:
        if isinstance(exc, types):
            info = ErrorInfo.from_exception(exc, code=code, retryable=retryable)
            if isinstance(exc, TaskFailedError):
                info = info.model_copy(
                    update={"details": {**info.details, "cause": exc.error.code}}
                )
            return info
    if isinstance(exc, ModelError):
        return ErrorInfo.from_exception(exc, code=ErrorCode.PROVIDER_ERROR, retryable=exc.retryable)
    if isinstance(exc, HandlerError):
        return ErrorInfo.from_exception(exc, code=ErrorCode.HANDLER_ERROR, retryable=exc.retryable)
    if isinstance(exc, OutboxError | BulkheadError):
        return ErrorInfo.from_exception(exc, code=ErrorCode.UNAVAILABLE, retryable=exc.retryable)
    return ErrorInfo.from_exception(exc, code=ErrorCode.HANDLER_ERROR, retryable=True)
