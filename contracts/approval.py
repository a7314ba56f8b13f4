"""Human approval of a tool call: the request, the decision, and the signed grant.

The tool host refuses a call that needs approval with ``approval_required``; the
agent's run records an `ApprovalRequest` and suspends. A human decides
(``ballast approvals approve|deny`` or the HTTP endpoint); an approval is a
grant signed by the approver's key, bound to the call id and a digest of the
arguments, which the tool host verifies before it runs the call.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, JsonValue

from contracts.principal import Principal
from contracts.wire import MessageId, Name, TaskId, UtcDateTime, WireModel, utc_now


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    """Nobody decided in time: treated as denied."""


class ApprovalRequest(WireModel):
    """What would happen if a human says yes. Published on ``ballast.event.approval.requested``."""

    approval_id: MessageId = Field(description="The call id of the step awaiting approval.")
    task_id: TaskId
    agent: Name
    tool: Name
    args: dict[str, JsonValue]
    principal: Principal
    reason: str = Field(description="Why approval is needed, e.g. egress after untrusted content.")
    status: ApprovalStatus = ApprovalStatus.PENDING
    requested_at: UtcDateTime = Field(default_factory=utc_now)
    expires_at: UtcDateTime
    decided_by: str | None = None
    decided_at: UtcDateTime | None = None
    grant: str | None = Field(default=None, description="The signed grant once approved.")


class ApprovalGrant(WireModel):
    """A signed yes for exactly one call (its id and a digest of its arguments)."""

    approval_id: MessageId
    tool: Name
    args_digest: str = Field(description="SHA-256 of the canonical JSON of the arguments.")
    approver: str
    expires_at: UtcDateTime
    signer: str = Field(description="Public key (NATS nkey) of the approver's signing key.")
    signature: str = Field(description="Ed25519 signature, base64url, over the other fields.")
