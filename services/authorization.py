"""Authorization at the tool host: deny by default, decided in one place.

A call runs only if all of these hold, checked in this order (the first that
fails decides):

1. ``allow_list``: the tool is on the calling agent's declared list of tools;
2. ``scopes``: the (verified) principal holds every scope the tool requires;
3. ``arguments``: every argument policy of the tool is satisfied;
4. ``untrusted_content``: if untrusted content entered the run and the tool is
   sensitive (egress, payment, destructive), the tool's or the tenant's rule
   applies: refuse, or require a human's approval;
5. ``approval``: a tool that always needs approval, does.

A call that needs approval runs once it carries a valid grant for exactly its
arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from contracts.audit import Verdict
from contracts.principal import Principal
from contracts.tools import ToolCall
from contracts.trust import SENSITIVE, Sensitivity

if TYPE_CHECKING:
    from services.specs import ToolSpec


class AfterUntrusted(StrEnum):
    """What a sensitive tool does when untrusted content entered the calling run."""

    APPROVE = "approve"
    """Run only after a human approved the call."""
    REFUSE = "refuse"
    ALLOW = "allow"
    """Run anyway (for tools whose sensitivity is acceptable to the tenant)."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallUnderReview:
    """Everything a decision looks at."""

    spec: ToolSpec
    call: ToolCall
    principal: Principal
    allowed_tools: frozenset[str] | None
    """The calling agent's declared tools; None if it declared none."""
    tenant_rule: AfterUntrusted | None
    approved: bool
    """Whether the call carries a valid grant for exactly its arguments."""


def _allow_list(r: CallUnderReview) -> Decision | None:
    if r.allowed_tools is not None and r.call.tool in r.allowed_tools:
        return None
    return Decision(
        Verdict.DENIED,
        "allow_list",
        f"agent {r.call.agent} may not call {r.call.tool}: it is not on its list of tools",
    )


def _scopes(r: CallUnderReview) -> Decision | None:
    if r.principal.holds(r.spec.scopes):
        return None
    missing = ", ".join(sorted(set(r.spec.scopes) - set(r.principal.scopes)))
    return Decision(Verdict.DENIED, "scopes", f"{r.principal.user_id} lacks the scopes {missing}")


def _arguments(r: CallUnderReview) -> Decision | None:
    for policy in r.spec.policies:
        violation = policy.violation(r.call.args, r.principal)
        if violation is not None:
            return Decision(Verdict.DENIED, "arguments", violation)
    return None


def _untrusted_content(r: CallUnderReview) -> Decision | None:
    if not r.call.untrusted_context or r.spec.sensitivity not in SENSITIVE:
        return None
    rule = r.tenant_rule or r.spec.after_untrusted
    what = f"{r.spec.sensitivity.value} tool {r.call.tool}"
    if rule is AfterUntrusted.REFUSE:
        return Decision(
            Verdict.DENIED, "untrusted_content", f"{what} is refused after untrusted content"
        )
    if rule is AfterUntrusted.APPROVE and not r.approved:
        return Decision(
            Verdict.APPROVAL_REQUIRED,
            "untrusted_content",
            f"{what} after untrusted content needs a human's approval",
        )
    return None


def _always_approve(r: CallUnderReview) -> Decision | None:
    if r.spec.always_approve and not r.approved:
        return Decision(
            Verdict.APPROVAL_REQUIRED, "approval", f"{r.call.tool} always needs approval"
        )
    return None


RULES = (_allow_list, _scopes, _arguments, _untrusted_content, _always_approve)
"""Checked in order; the first that objects decides."""


def decide(review: CallUnderReview) -> Decision:
    """The verdict on a call: the first rule that objects, or allowed."""
    for rule in RULES:
        decision = rule(review)
        if decision is not None:
            return decision
    return Decision(Verdict.ALLOWED, "allowed", "all rules passed")


def default_after_untrusted(sensitivity: Sensitivity) -> AfterUntrusted:
    return AfterUntrusted.APPROVE if sensitivity in SENSITIVE else AfterUntrusted.ALLOW
