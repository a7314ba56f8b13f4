"""The agent host: runs ``async def run(ctx, task)`` for each task of an agent.

Everything an agent does to the world goes through its context: ``ctx.llm``
(the model), ``ctx.tool`` (a tool call over the bus) and ``ctx.delegate`` (a
task for another agent). Each such call gets a deterministic step key
``<task_id>:<seq>``, numbered in the order the calls are made (also inside
``asyncio.gather``). The step key is the tool call's idempotency key, so a
run executed again after a crash repeats its calls with the same keys: the
stream drops the duplicate publishes, the tool host's inbox refuses to run a
call twice, and the run reads the earlier results back from the stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel, JsonValue

from contracts.errors import ErrorInfo
from contracts.principal import Principal
from contracts.subjects import (
    Header,
    result_subject,
    task_event_subject,
    task_subject,
    tool_subject,
)
from contracts.tasks import ParentRef, TaskRequest, TaskResult, TaskStatus
from contracts.tools import ToolCall, ToolResult, ToolStatus
from contracts.wire import utc_now
from outbox import Database, UnitOfWork
from services.delivery import Consumer, Delivery, Output
from services.errors import (
    ConfigurationError,
    DelegationError,
    InvalidMessageError,
    ToolCallError,
)
from services.llm import ChatMessage, ChatReply, ToolDefinition
from services.results import ResultWaiter, result_headers
from services.specs import AgentSpec, to_json_value

REDRIVE_HEADER = "ballast-redrive"
"""Set on a message published again from the dead-letter queue."""

_CHILD_TASK_NAMESPACE = uuid.UUID("6f1c1c8e-8d1e-4a53-9a57-6b1f2f7e4d10")


class AgentContext:
    """The agent's door to the world; one per execution of a task."""

    def __init__(
        self,
        spec: AgentSpec,
        task: TaskRequest,
        *,
        db: Database,
        waiter: ResultWaiter,
        resumed: bool,
    ) -> None:
        self.spec = spec
        self.task = task
        self._db = db
        self._waiter = waiter
        self._resumed = resumed
        self._seq = 0
        self.log = structlog.get_logger("ballast.agent").bind(agent=spec.name)

    @property
    def principal(self) -> Principal:
        return self.task.principal

    def _next_key(self) -> str:
        self._seq += 1
        return f"{self.task.task_id}:{self._seq}"

    async def llm(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        max_tokens: int | None = None,
    ) -> ChatReply:
        """Ask the agent's model."""
        self._next_key()  # a step like any other, so later keys do not shift when it is journaled
        if self.spec.model is None:
            raise ConfigurationError(
                f"agent {self.spec.name} called ctx.llm but was declared without a model"
            )
        return await self.spec.model.complete(messages, tools=tools, max_tokens=max_tokens)

    def tool(self, name: str, args: Mapping[str, Any] | BaseModel) -> Awaitable[JsonValue]:
        """Call tool ``name`` and return its output; raises `ToolCallError` if it failed for good.

        The step key is taken now, at the call, so ``asyncio.gather(ctx.tool(...), ...)``
        numbers its calls in the order they are written.
        """
        return self._call_tool(self._next_key(), name, args)

    def delegate(self, agent: str, input: Mapping[str, Any]) -> Awaitable[JsonValue]:
        """Run a child task on ``agent`` and return its output.

        Raises `DelegationError` if the child task failed.
        """
        return self._delegate(self._next_key(), agent, input)

    def _headers(self) -> dict[str, str]:
        headers = {Header.TASK_ID: self.task.task_id}
        if self.task.deadline is not None:
            headers[Header.DEADLINE] = self.task.deadline.isoformat()
        return headers

    async def _call_tool(
        self, key: str, name: str, args: Mapping[str, Any] | BaseModel
    ) -> JsonValue:
        call = ToolCall(
            call_id=key,
            tool=name,
            args=args.model_dump(mode="json") if isinstance(args, BaseModel) else dict(args),
            task_id=self.task.task_id,
            agent=self.spec.name,
            principal=self.task.principal,
            deadline=self.task.deadline,
        )
        data = await self._request(key, tool_subject(name), call)
        result = ToolResult.model_validate_json(data)
        if result.status is ToolStatus.ERROR:
            assert result.error is not None  # guaranteed by the model
            raise ToolCallError(f"tool {name} failed: {result.error.message}", result.error)
        return result.output

    async def _delegate(self, key: str, agent: str, input: Mapping[str, Any]) -> JsonValue:
        child = TaskRequest(
            task_id=uuid.uuid5(_CHILD_TASK_NAMESPACE, key).hex,
            agent=agent,
            input=dict(input),
            principal=self.task.principal,  # a child never has more rights than its parent
            session_id=self.task.session_id,
            parent=ParentRef(agent=self.spec.name, task_id=self.task.task_id, step_key=key),
            deadline=self.task.deadline,
        )
        data = await self._request(key, task_subject(agent), child, message_id=child.task_id)
        result = TaskResult.model_validate_json(data)
        if result.status is not TaskStatus.COMPLETED:
            assert result.error is not None  # guaranteed by the model
            raise DelegationError(f"agent {agent} failed: {result.error.message}", result.error)
        return result.output

    async def _request(
        self, key: str, subject: str, message: BaseModel, *, message_id: str | None = None
    ) -> bytes:
        async with self._waiter.expect(self.task.task_id, key, scan_first=self._resumed) as pending:
            async with UnitOfWork(self._db) as uow:
                uow.publish(subject, message, message_id=message_id or key, headers=self._headers())
            return await pending.get()


class AgentConsumer(Consumer[TaskRequest]):
    """The durable consumer of one agent."""

    def __init__(
        self, spec: AgentSpec, *, db: Database, waiter: ResultWaiter, ack_wait_s: float
    ) -> None:
        super().__init__(spec, subject=task_subject(spec.name), db=db, ack_wait_s=ack_wait_s)
        self.spec = spec
        self.waiter = waiter

    def parse(self, delivery: Delivery) -> TaskRequest:
        task = TaskRequest.model_validate_json(delivery.body)
        if task.agent != self.spec.name:
            raise InvalidMessageError(
                f"task for agent {task.agent!r} arrived on {delivery.subject}; publish it to "
                f"{task_subject(task.agent)}"
            )
        return task

    def key(self, message: TaskRequest) -> str:
        return message.task_id

    def deadline(self, message: TaskRequest) -> datetime | None:
        return message.deadline

    async def process(self, message: TaskRequest, delivery: Delivery) -> None:
        started_at = utc_now()
        ctx = AgentContext(
            self.spec,
            message,
            db=self.db,
            waiter=self.waiter,
            resumed=delivery.attempt > 1 or REDRIVE_HEADER in delivery.headers,
        )
        output = to_json_value(await self.spec.fn(ctx, message))
        result = TaskResult(
            task_id=message.task_id,
            agent=message.agent,
            status=TaskStatus.COMPLETED,
            output=output,
            parent=message.parent,
            started_at=started_at,
        )
        async with UnitOfWork(self.db) as uow:
            uow.mark_processed(self.service, message.task_id, result.model_dump_json().encode())
            for out in _announce(result):
                uow.publish(out.subject, out.payload, headers=out.headers)

    def failure_outputs(
        self, message: TaskRequest, delivery: Delivery, error: ErrorInfo
    ) -> Sequence[Output]:
        result = TaskResult(
            task_id=message.task_id,
            agent=message.agent,
            status=TaskStatus.FAILED,
            error=error,
            parent=message.parent,
            started_at=delivery.published_at,
        )
        return _announce(result)


def _announce(result: TaskResult) -> list[Output]:
    """Where a task's end goes: the task event, and the parent run if there is one."""
    outputs = [
        Output(task_event_subject(result.status.value), result, {Header.TASK_ID: result.task_id})
    ]
    if result.parent is not None:
        outputs.append(
            Output(
                result_subject(result.parent.agent, result.parent.task_id),
                result,
                result_headers(result.parent.task_id, result.parent.step_key),
            )
        )
    return outputs
