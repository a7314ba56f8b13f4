"""The tool host: runs a tool's calls, each at most once, and only when allowed.

For each call: validate; check the inbox (a repeat is answered with the stored
result) and claim it; refuse it after its deadline; verify the signed
principal; decide authorization (`services.authorization`: the agent's
allow-list, the principal's scopes, argument policies, untrusted content,
approval). Every decision is recorded in ``ballast_audit`` and published as
``ballast.event.auth.<verdict>``, in the transaction of the call's outcome.

An allowed call runs in a unit of work: the tool's own writes (``ctx.session``),
the events it publishes (``ctx.publish``), its inbox entry, its audit record and
its `ToolResult` commit in one transaction, so the effect and the answer are
both there or both absent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.audit import AuthDecision, Verdict
from contracts.errors import ErrorCode, ErrorInfo
from contracts.subjects import Header, event_subject, result_subject, tool_subject
from contracts.tools import ToolCall, ToolResult, ToolStatus
from contracts.trust import Provenance
from contracts.wire import utc_now
from outbox import UnitOfWork
from outbox.tables import AuditRecord
from services.authorization import AfterUntrusted, CallUnderReview, Decision, decide
from services.breakers import SharedBreakers, is_outage
from services.delivery import Consumer, ConsumerSettings, Delivery, Output
from services.errors import AuthenticationError, ForbiddenError, InvalidMessageError
from services.identity import verify_grant, verify_principal
from services.keys import Keys
from services.registry import AgentRegistry
from services.results import result_headers
from services.specs import ToolSpec, to_json_value

log = structlog.get_logger("ballast.tool")


@dataclass(frozen=True, slots=True)
class ToolGuards:
    """What the tool hosts of one process check calls against."""

    keys: Keys
    registry: AgentRegistry
    untrusted_rules: Mapping[str, Mapping[str, AfterUntrusted]]
    """Per tenant, per tool: overrides of a tool's rule after untrusted content."""


class ToolContext:
    """What a tool function gets besides its arguments."""

    def __init__(
        self, call: ToolCall, attempt: int, uow: UnitOfWork, events: frozenset[str] = frozenset()
    ) -> None:
        self.call = call
        self._events = events
        """The subjects of the events the tool declared."""
        self.attempt = attempt
        """1 on the first delivery of this call, higher on retries."""
        self._uow = uow
        self.provenance: list[Provenance] = []
        """Where the output came from; add untrusted sources with `from_source`."""

    @functools.cached_property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger bound to this call; bound when first used, as most tools never log."""
        bound: structlog.typing.FilteringBoundLogger = log.bind(
            tool=self.call.tool, call_id=self.call.call_id
        )
        return bound

    @property
    def idempotency_key(self) -> str:
        """Give this to external APIs as their idempotency key: a retry is then no second effect."""
        return self.call.call_id

    @property
    def session(self) -> AsyncSession:
        """A session whose writes commit together with this call's result, or not at all."""
        return self._uow.session

    def publish(self, subject: str, payload: BaseModel, *, message_id: str | None = None) -> None:
        """Publish an event when (and only if) this call's result commits.

        Only the events the tool declared (``events=``) may be published.
        """
        if subject not in self._events:
            raise ForbiddenError(
                f"{self.call.tool} did not declare the event {subject}; add it to events="
            )
        self._uow.publish(
            subject,
            payload,
            message_id=message_id,
            headers={Header.TASK_ID: self.call.task_id},
        )

    def from_source(
        self,
        source: str,
        *,
        trusted: bool,
        document_id: str | None = None,
        chunk: str | None = None,
    ) -> None:
        """Say where (part of) the output came from; untrusted sources taint the caller."""
        self.provenance.append(
            Provenance(
                source=source,
                document_id=document_id,
                chunk=chunk,
                trusted=trusted,
                fetched_at=utc_now(),
            )
        )


class ToolConsumer(Consumer[ToolCall]):
    """The durable consumer of one tool."""

    def __init__(
        self,
        spec: ToolSpec,
        *,
        settings: ConsumerSettings,
        breakers: SharedBreakers,
        guards: ToolGuards,
    ) -> None:
        super().__init__(spec, subject=tool_subject(spec.name), settings=settings)
        self.spec = spec
        self.breakers = breakers
        self.guards = guards
        self.event_subjects = frozenset(event_subject(*e.split(".")) for e in spec.events)

    def parse(self, delivery: Delivery) -> ToolCall:
        call = ToolCall.model_validate_json(delivery.body)
        if call.tool != self.spec.name:
            raise InvalidMessageError(
                f"call of tool {call.tool!r} arrived on {delivery.subject}; publish it to "
                f"{tool_subject(call.tool)}"
            )
        return call

    def key(self, message: ToolCall) -> str:
        return message.call_id

    def deadline(self, message: ToolCall) -> datetime | None:
        return message.deadline

    async def process(self, message: ToolCall, delivery: Delivery) -> None:
        decision, code = await self._authorize(message, delivery)
        if decision.verdict is not Verdict.ALLOWED:
            await self._refuse(message, delivery, decision, code)
            return
        spec = self.spec
        args = spec.args_model.model_validate(message.args) if spec.args_model else message.args
        async with UnitOfWork(self.db) as uow:
            ctx = ToolContext(message, delivery.attempt, uow, self.event_subjects)
            if not spec.trusted_output:
                ctx.from_source(f"tool:{spec.name}", trusted=False)
            output = await self.breakers.call(
                f"tool.{spec.name}", lambda: spec.fn(ctx, args), counts_as_failure=is_outage
            )
            result = _answer(
                message,
                delivery,
                status=ToolStatus.OK,
                output=to_json_value(output),
                provenance=tuple(ctx.provenance),
            )
            data = result.model_dump_json().encode()
            _audit(uow, message, decision)
            uow.mark_processed(self.service, message.call_id, data)
            uow.publish(
                result_subject(message.agent, message.task_id),
                data,
                headers=result_headers(message.task_id, message.call_id),
            )

    async def _authorize(self, call: ToolCall, delivery: Delivery) -> tuple[Decision, ErrorCode]:
        keys = self.guards.keys
        try:
            principal = verify_principal(
                delivery.headers.get(Header.PRINCIPAL), call.principal, keys.principals
            )
            approved = False
            if call.approval is not None:
                if call.approval.approval_id != call.call_id:
                    raise AuthenticationError("the approval was given for another call")
                verify_grant(call.approval, call.tool, call.args, keys.approvers)
                approved = True
        except AuthenticationError as exc:
            return Decision(Verdict.DENIED, "authentication", str(exc)), ErrorCode.UNAUTHENTICATED
        policy = await self.guards.registry.policy(call.agent)
        decision = decide(
            CallUnderReview(
                spec=self.spec,
                call=call,
                principal=principal,
                allowed_tools=frozenset(policy.tools) if policy is not None else None,
                tenant_rule=self.guards.untrusted_rules.get(principal.tenant, {}).get(call.tool),
                approved=approved,
            )
        )
        code = (
            ErrorCode.APPROVAL_REQUIRED
            if decision.verdict is Verdict.APPROVAL_REQUIRED
            else ErrorCode.FORBIDDEN
        )
        return decision, code

    async def _refuse(
        self, call: ToolCall, delivery: Delivery, decision: Decision, code: ErrorCode
    ) -> None:
        log.warning(
            "tool.refused", verdict=decision.verdict, rule=decision.rule, reason=decision.reason
        )
        error = ErrorInfo(
            code=code,
            message=decision.reason,
            retryable=False,
            details={"rule": decision.rule, "sensitivity": self.spec.sensitivity.value},
        )
        result = _answer(call, delivery, status=ToolStatus.ERROR, error=error)
        async with UnitOfWork(self.db) as uow:
            _audit(uow, call, decision)
            if decision.verdict is Verdict.DENIED:
                uow.mark_processed(self.service, call.call_id, result.model_dump_json().encode())
            else:
                # Not processed: the same call comes back with an approval grant.
                uow.end_claim(self.service, call.call_id)
            uow.publish(
                result_subject(call.agent, call.task_id),
                result,
                headers=result_headers(call.task_id, call.call_id),
            )

    def repeat_outputs(self, message: ToolCall, stored: bytes | None) -> Sequence[Output]:
        if stored is None:
            return ()
        subject = result_subject(message.agent, message.task_id)
        return [Output(subject, stored, result_headers(message.task_id, message.call_id))]

    async def on_failure(
        self, message: ToolCall, delivery: Delivery, error: ErrorInfo
    ) -> Sequence[Output]:
        # The audit record of a call that ran rolled back with its failed handler; the
        # decision that let it run is still part of the record.
        decision, _ = await self._authorize(message, delivery)
        async with UnitOfWork(self.db) as uow:
            _audit(uow, message, decision)
        return [
            Output(
                result_subject(message.agent, message.task_id),
                _answer(message, delivery, status=ToolStatus.ERROR, error=error),
                result_headers(message.task_id, message.call_id),
            )
        ]


def _audit(uow: UnitOfWork, call: ToolCall, decision: Decision) -> None:
    event = AuthDecision(
        task_id=call.task_id,
        call_id=call.call_id,
        agent=call.agent,
        tool=call.tool,
        user_id=call.principal.user_id,
        tenant=call.principal.tenant,
        verdict=decision.verdict,
        rule=decision.rule,
        reason=decision.reason,
        untrusted_context=call.untrusted_context,
    )
    uow.insert(
        AuditRecord,
        {
            "at": event.at,
            "task_id": event.task_id,
            "call_id": event.call_id,
            "agent": event.agent,
            "tool": event.tool,
            "user_id": event.user_id,
            "tenant": event.tenant,
            "verdict": event.verdict.value,
            "rule": event.rule,
            "reason": event.reason,
        },
    )
    uow.publish(
        event_subject("auth", decision.verdict.value), event, headers={Header.TASK_ID: call.task_id}
    )


def _answer(call: ToolCall, delivery: Delivery, **outcome: Any) -> ToolResult:
    return ToolResult(
        call_id=call.call_id,
        tool=call.tool,
        task_id=call.task_id,
        agent=call.agent,
        attempts=delivery.attempt,
        **outcome,
    )
