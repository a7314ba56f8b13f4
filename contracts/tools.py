"""Tool calls: what an agent asks a tool to do, and the answer."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, JsonValue, model_validator

from contracts.approval import ApprovalGrant
from contracts.errors import ErrorInfo
from contracts.principal import Principal
from contracts.trust import Provenance
from contracts.wire import MessageId, Name, TaskId, UtcDateTime, WireModel, utc_now


class ToolCall(WireModel):
    """A call of a tool, published to ``ballast.tool.<tool>``.

    ``call_id`` is the idempotency key (the agent's step key ``<task_id>:<seq>``):
    the tool host runs a call at most once per id and answers repeats with the
    stored result.
    """

    call_id: MessageId
    tool: Name
    args: dict[str, JsonValue] = Field(
        default_factory=dict, description="Arguments, a JSON object."
    )
    task_id: TaskId = Field(description="The task whose run made the call.")
    agent: Name = Field(description="The calling agent; the result goes back to it.")
    principal: Principal
    deadline: UtcDateTime | None = Field(
        default=None, description="The tool refuses the call after this instant."
    )
    untrusted_context: bool = Field(
        default=True,
        description="Whether untrusted content entered the calling run before this call.",
    )
    provenance: tuple[Provenance, ...] = Field(
        default=(), description="Where the untrusted content of the run came from."
    )
    approval: ApprovalGrant | None = Field(
        default=None, description="A human's signed approval of exactly this call."
    )
    created_at: UtcDateTime = Field(default_factory=utc_now)


class ToolStatus(StrEnum):
    """Outcome of a tool call."""

    OK = "ok"
    """The tool ran and returned ``output``."""

    ERROR = "error"
    """The tool failed for good (after its retries); ``error`` says why."""


class ToolResult(WireModel):
    """The answer to a `ToolCall`, published to ``ballast.result.<agent>.<task_id>``."""

    call_id: MessageId
    tool: Name
    task_id: TaskId
    agent: Name
    status: ToolStatus
    output: JsonValue = Field(default=None, description="What the tool returned when ok.")
    error: ErrorInfo | None = None
    provenance: tuple[Provenance, ...] = Field(
        default=(), description="Where the output came from; untrusted parts taint the caller."
    )
    attempts: int = Field(ge=1, description="Deliveries it took, the successful one included.")
    finished_at: UtcDateTime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _error_matches_status(self) -> Self:
        if (self.status is ToolStatus.OK) == (self.error is not None):
            raise ValueError("an ok result has no error; an error result must have one")
        return self
