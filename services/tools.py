"""The tool host: runs a tool's calls, each at most once per idempotency key.

For each call: validate, check the inbox (a repeated call runs nothing), refuse
it after its deadline, then run the tool in a unit of work. The tool's own
writes (``ctx.session``), the events it publishes (``ctx.publish``), its inbox
entry and its `ToolResult` commit in one transaction, so the effect and the
answer are both there or both absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from bulkheads import WorkerPool
from contracts.errors import ErrorInfo
from contracts.subjects import Header, result_subject, tool_subject
from contracts.tools import ToolCall, ToolResult, ToolStatus
from contracts.wire import utc_now
from outbox import Database, UnitOfWork
from services.delivery import Consumer, Delivery, Output
from services.errors import DeadlineExceededError, InvalidMessageError
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

    def __init__(self, spec: ToolSpec, *, db: Database, ack_wait_s: float) -> None:
        super().__init__(
            service=spec.service,
            subject=tool_subject(spec.name),
            pool=WorkerPool(spec.service, spec.pool),
            retry=spec.retry,
            db=db,
            ack_wait_s=ack_wait_s,
        )
        self.spec = spec

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

    async def process(self, message: ToolCall, delivery: Delivery) -> None:
        async with UnitOfWork(self.db) as check:
            done = await check.processed(self.service, message.call_id)
        if done is not None:
            # Its result committed with that entry; the relay publishes (or did publish) it.
            structlog.get_logger("ballast.tool").info("tool.repeat_call_ignored")
            return
        if message.deadline is not None and message.deadline <= utc_now():
            raise DeadlineExceededError(
                f"call {message.call_id} expired at {message.deadline.isoformat()}"
            )
        spec = self.spec
        args = spec.args_model.model_validate(message.args) if spec.args_model else message.args
        async with UnitOfWork(self.db) as uow:
            output = await spec.fn(ToolContext(message, delivery.attempt, uow), args)
            result = ToolResult(
                call_id=message.call_id,
                tool=message.tool,
                task_id=message.task_id,
                agent=message.agent,
                status=ToolStatus.OK,
                output=to_json_value(output),
                attempts=delivery.attempt,
            )
            data = result.model_dump_json().encode()
            uow.mark_processed(self.service, message.call_id, data)
            uow.publish(
                result_subject(message.agent, message.task_id),
                data,
                headers=result_headers(message.task_id, message.call_id),
            )

    def failure_outputs(
        self, message: ToolCall, delivery: Delivery, error: ErrorInfo
    ) -> Sequence[Output]:
        result = ToolResult(
            call_id=message.call_id,
            tool=message.tool,
            task_id=message.task_id,
            agent=message.agent,
            status=ToolStatus.ERROR,
            error=error,
            attempts=delivery.attempt,
        )
        return [
            Output(
                result_subject(message.agent, message.task_id),
                result,
                result_headers(message.task_id, message.call_id),
            )
        ]
