"""Tasks: what a client asks an agent to do, and how it ended."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, JsonValue, model_validator

from contracts.budget import BudgetLimits
from contracts.errors import ErrorInfo
from contracts.ids import new_id
from contracts.principal import Principal
from contracts.trust import Provenance
from contracts.wire import MessageId, Name, TaskId, UtcDateTime, WireModel, utc_now


class ParentRef(WireModel):
    """Where a child task's result must go: the parent run and the step that waits for it."""

    agent: Name
    task_id: TaskId
    step_key: MessageId = Field(description="The parent's step that delegated this task.")


class TaskRequest(WireModel):
    """A request for an agent to run, published to ``ballast.task.<agent>``.

    ``task_id`` is the idempotency key: publishing the same task twice runs it once.
    It becomes the message's ``Nats-Msg-Id``.
    """

    task_id: TaskId = Field(
        default_factory=new_id,
        description="Idempotency key of the task; generated when omitted.",
    )
    agent: Name = Field(description="The agent that must run the task.")
    input: dict[str, JsonValue] = Field(
        default_factory=dict, description="The agent's input, a JSON object."
    )
    principal: Principal
    session_id: str | None = Field(default=None, max_length=200)
    parent: ParentRef | None = Field(
        default=None, description="Set when another agent delegated this task."
    )
    deadline: UtcDateTime | None = Field(
        default=None, description="After this instant the task is not started any more."
    )
    input_trusted: bool = Field(
        default=False,
        description=(
            "Whether the input is trusted. Leave false when any of it was written by someone "
            "else than the principal (a customer's message, an e-mail, a web page)."
        ),
    )
    budget: BudgetLimits | None = Field(
        default=None,
        description="Caps for this task; they can only lower the agent's own per-task caps.",
    )
    created_at: UtcDateTime = Field(default_factory=utc_now)


class TaskStatus(StrEnum):
    """How a task ended."""

    COMPLETED = "completed"
    """The agent returned an output."""

    FAILED = "failed"
    """The agent raised, or a tool it needed failed for good; ``error`` says why."""

    BUDGET_EXCEEDED = "budget_exceeded"
    """A hard cap stopped the run; ``error.details`` names the scope, metric, limit and spend."""


class Compensation(WireModel):
    """A compensating tool call run because the task failed (saga), and how it went."""

    step_key: str = Field(description="The step it compensates.")
    tool: Name
    args: dict[str, JsonValue] = Field(default_factory=dict)
    ok: bool
    error: ErrorInfo | None = None


class TaskResult(WireModel):
    """The end of a task, published to ``ballast.event.task.<status>``.

    A child task's result also goes to its parent's result subject.
    """

    task_id: TaskId
    agent: Name
    status: TaskStatus
    output: JsonValue = Field(default=None, description="The agent's output when completed.")
    error: ErrorInfo | None = Field(default=None, description="Why the task failed.")
    parent: ParentRef | None = None
    provenance: tuple[Provenance, ...] = Field(
        default=(), description="Untrusted content that entered the run; it taints the parent."
    )
    compensations: tuple[Compensation, ...] = Field(
        default=(), description="Compensations run, in the order they ran, when the task failed."
    )
    started_at: UtcDateTime
    finished_at: UtcDateTime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _error_matches_status(self) -> Self:
        if (self.status is TaskStatus.COMPLETED) == (self.error is not None):
            raise ValueError("a completed task has no error; a failed task must have one")
        return self
