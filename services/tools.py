"""The tool host: runs a tool's calls, each at most once per idempotency key.

For each call: validate, check the inbox (a repeated call runs nothing), refuse
it after its deadline, then run the tool in a unit of work. The tool's own
writes (``ctx.session``), the events it publishes (``ctx.publish``), its inbox
entry and its `ToolResult` commit in one transaction, so the effect and the
answer are both there or both absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.errors import ErrorInfo
from contracts.subjects import Header, result_subject, tool_subject
from contracts.tools import ToolCall, ToolResult, ToolStatus
from outbox import Database, UnitOfWork
from services.breakers import SharedBreakers, is_outage
from services.delivery import Consumer, Delivery, Output
from services.errors import InvalidMessageError
from services.results import result_headers
from services.specs import ToolSpec, to_json_value


class ToolContext:
    """What a tool function gets besides its arguments."""

    def __init__(self, call: ToolCall, attempt: int, uow: UnitOfWork) -> None:
        self.call = call
        self.attempt = attempt
        """1 on the first delivery of this call, higher on retries."""
        self._uow = uow
        self.log = structlog.get_logger("ballast.tool").bind(tool=call.tool, call_id=call.call_id)

    @property
    def idempotency_key(self) -> str:
        """Give this to external APIs as their idempotency key: a retry is then no second effect."""
        return self.call.call_id

    @property
    def session(self) -> AsyncSession:
        """A session whose writes commit together with this call's result, or not at all."""
        return self._uow.session

    def publish(self, subject: str, payload: BaseModel, *, message_id: str | None = None) -> None:
        """Publish an event when (and only if) this call's result commits."""
        self._uow.publish(
            subject,
            payload,
            message_id=message_id,
            headers={Header.TASK_ID: self.call.task_id},
        )


class ToolConsumer(Consumer[ToolCall]):
    """The durable consumer of one tool."""

    def __init__(
        self, spec: ToolSpec, *, db: Database, breakers: SharedBreakers, ack_wait_s: float
    ) -> None:
        super().__init__(spec, subject=tool_subject(spec.name), db=db, ack_wait_s=ack_wait_s)
        self.spec = spec
        self.breakers = breakers

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
        spec = self.spec
        args = spec.args_model.model_validate(message.args) if spec.args_model else message.args
        async with UnitOfWork(self.db) as uow:
            ctx = ToolContext(message, delivery.attempt, uow)
            output = await self.breakers.call(
                f"tool.{spec.name}", lambda: spec.fn(ctx, args), counts_as_failure=is_outage
            )
            result = _answer(message, delivery, status=ToolStatus.OK, output=to_json_value(output))
            data = result.model_dump_json().encode()
            uow.mark_processed(self.service, message.call_id, data)
            uow.publish(
                result_subject(message.agent, message.task_id),
                data,
                headers=result_headers(message.task_id, message.call_id),
            )

    def repeat_outputs(self, message: ToolCall, stored: bytes | None) -> Sequence[Output]:
        if stored is None:
            return ()
        subject = result_subject(message.agent, message.task_id)
        return [Output(subject, stored, result_headers(message.task_id, message.call_id))]

    async def on_failure(
        self, message: ToolCall, delivery: Delivery, error: ErrorInfo
    ) -> Sequence[Output]:
        return [
            Output(
                result_subject(message.agent, message.task_id),
                _answer(message, delivery, status=ToolStatus.ERROR, error=error),
                result_headers(message.task_id, message.call_id),
            )
        ]


def _answer(call: ToolCall, delivery: Delivery, **outcome: Any) -> ToolResult:
    return ToolResult(
        call_id=call.call_id,
        tool=call.tool,
        task_id=call.task_id,
        agent=call.agent,
        attempts=delivery.attempt,
        **outcome,
    )
