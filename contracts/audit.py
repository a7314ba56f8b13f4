"""Authorization decisions, published on ``ballast.event.auth.<decision>``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from contracts.wire import MessageId, Name, TaskId, UtcDateTime, WireModel, utc_now


class Verdict(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    APPROVAL_REQUIRED = "approval_required"


class AuthDecision(WireModel):
    """Who asked for what, what was decided, and which rule decided it."""

    task_id: TaskId
    call_id: MessageId
    agent: Name
    tool: Name
    user_id: str
    tenant: str
    verdict: Verdict
    rule: str = Field(description="The rule that decided, e.g. 'allow_list' or 'scopes'.")
    reason: str
    untrusted_context: bool
    at: UtcDateTime = Field(default_factory=utc_now)
