"""Exceptions raised by ``services``.

::

    BallastError
    ├── ConfigurationError (ValueError)   settings or declarations that cannot work
    ├── EmbeddedBrokerError               the embedded nats-server did not start
    ├── BrokerError                       the broker refused or did not answer
    ├── HandlerError                      raised by user code; says whether to retry
    │   ├── ModelError                    the model provider failed
    │   └── NonDeterminismError           re-executed code asked for other steps than journaled
    ├── BudgetExceededError               a hard budget cap stopped the run
    ├── AuthenticationError               a principal or grant that cannot be trusted
    ├── ForbiddenError                    authorization denied a call
    ├── ApprovalRequiredError             a call waits for a human's decision
    ├── RunSuspended                      (a signal) the run waits for an approval
    ├── InvalidMessageError               a message that can never be processed as it is
    │   └── TooLargeError                 larger than the configured limit
    ├── DeadlineExceededError             the message's deadline passed before it ran
    └── TaskFailedError                   something an agent awaited failed for good
        ├── ToolCallError                 a tool call ended with an error result
        ├── DelegationError               a child task ended failed
        └── StepFailedError               a ctx.step failed for good (also on replay)
            └── SessionEndedError         the task's session was closed or has expired
"""

from __future__ import annotations

from contracts.budget import BudgetExceeded
from contracts.errors import ErrorCode, ErrorInfo


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


class RunOvertakenError(BallastError):
    """Another delivery of the same run recorded a step first (this one's claim lapsed under
    load and the broker redelivered the task). This delivery stops before doing the step
    again, and its retry replays the journal. Retryable: `describe_failure` lists it under
    no rule of its own."""


class InvalidMessageError(BallastError):
    """A message that cannot be processed as it is: not JSON, wrong schema, wrong subject."""


class DeadlineExceededError(BallastError):
    """The message's deadline passed before it could run."""


class StepFailedError(TaskFailedError):
    """A ``ctx.step`` failed for good; a re-executed run gets the same error from the journal."""


class SessionEndedError(StepFailedError):
    """The task's session was closed or has expired; the client starts a new session."""


class ModelError(HandlerError):
    """The model provider refused or failed the request."""


class NonDeterminismError(HandlerError):
    """Re-executed agent code asked for a different step than its journal holds there."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class BudgetExceededError(BallastError):
    """A step would cross a hard budget cap; the run stops with status ``budget_exceeded``."""

    def __init__(self, exceeded: BudgetExceeded) -> None:
        super().__init__(
            f"{exceeded.metric.value} cap of {exceeded.scope.value} {exceeded.scope_key} reached: "
            f"{exceeded.spent} spent of {exceeded.limit}, {exceeded.requested} more needed"
        )
        self.exceeded = exceeded

    def info(self) -> ErrorInfo:
        """The wire error naming the scope, metric, limit and spend."""
        details = self.exceeded.model_dump(mode="json")
        return ErrorInfo(
            code=ErrorCode.BUDGET_EXCEEDED, message=str(self), retryable=False, details=details
        )


class AuthenticationError(BallastError):
    """A principal or approval grant is unsigned, expired, tampered with, or by an unknown key."""


class ForbiddenError(BallastError):
    """Authorization denied the call; the message says which rule."""


class ApprovalRequiredError(BallastError):
    """The call may run only after a human approves it."""


class RunSuspended(BallastError):
    """The run waits for a human's decision; its message is acknowledged meanwhile."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(f"waiting for approval {approval_id}")
        self.approval_id = approval_id


class TooLargeError(InvalidMessageError):
    """A message (or a conversation) larger than allowed."""
