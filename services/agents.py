"""The agent host: runs ``async def run(ctx, task)`` for each task of an agent.

The run is durable (see `services.agent_context`): executed again after a crash
or a redelivery, it replays its journal and continues where it stopped. How a
task ends:

- the function returns: ``completed`` with its output;
- a budget cap stops it: ``budget_exceeded`` (and ``ballast.event.budget.exceeded``);
- the loop guard stops it: ``failed`` with ``loop_detected``;
- it fails for good (error, retries used up, non-determinism): ``failed``, and the
  message goes to the dead-letter queue.

Whenever it does not complete, the compensations registered by its completed
steps run first, newest first, and the result lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from bulkheads import LoopDetectedError
from contracts.errors import ErrorCode, ErrorInfo
from contracts.subjects import (
    Header,
    event_subject,
    result_subject,
    task_event_subject,
    task_subject,
)
from contracts.tasks import Compensation, TaskRequest, TaskResult, TaskStatus
from contracts.wire import utc_now
from outbox import UnitOfWork
from outbox.journal import RUN_SEQ, StepStatus, finish_step, load_journal
from services.agent_context import AgentContext, AgentRuntime
from services.delivery import Consumer, ConsumerSettings, Delivery, Output
from services.errors import (
    AuthenticationError,
    BudgetExceededError,
    InvalidMessageError,
    RunSuspended,
)
from services.failure_info import describe_failure
from services.identity import KeyRing, verify_principal
from services.results import result_headers
from services.specs import AgentSpec, to_json_value


class AgentConsumer(Consumer[TaskRequest]):
    """The durable consumer of one agent."""

    def __init__(
        self,
        spec: AgentSpec,
        *,
        settings: ConsumerSettings,
        runtime: AgentRuntime,
        principals: KeyRing,
    ) -> None:
        super().__init__(spec, subject=task_subject(spec.name), settings=settings)
        self.spec = spec
        self.runtime = runtime
        self.principals = principals

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

    async def context(self, task: TaskRequest, delivery: Delivery) -> AgentContext:
        """A context for one execution of ``task``, its journal loaded."""
        journal = await load_journal(self.db, task.task_id)
        return AgentContext(
            self.spec,
            task,
            runtime=self.runtime,
            journal=journal,
            resumed=bool(journal) or delivery.attempt > 1 or Header.REDRIVE in delivery.headers,
            principal_token=delivery.headers.get(Header.PRINCIPAL),
        )

    async def process(self, message: TaskRequest, delivery: Delivery) -> None:
        started_at = utc_now()
        try:
            verify_principal(
                delivery.headers.get(Header.PRINCIPAL), message.principal, self.principals
            )
        except AuthenticationError as exc:
            await self._refuse(message, delivery, exc)
            return
        ctx = await self.context(message, delivery)
        await ctx.begin()
        events: list[Output] = []
        try:
            output = to_json_value(await self.spec.fn(ctx, message))
        except RunSuspended as suspended:
            # The message is acknowledged; the decision publishes the task again.
            ctx.log.info("agent.suspended", approval=suspended.approval_id)
            async with UnitOfWork(self.db) as uow:
                uow.end_claim(self.service, message.task_id)
            return
        except BudgetExceededError as exc:
            status, error = TaskStatus.BUDGET_EXCEEDED, exc.info()
            events.append(Output(event_subject("budget", "exceeded"), exc.exceeded, _task(message)))
        except LoopDetectedError as exc:
            status, error = TaskStatus.FAILED, describe_failure(exc)
        else:
            result = TaskResult(
                task_id=message.task_id,
                agent=message.agent,
                status=TaskStatus.COMPLETED,
                output=output,
                parent=message.parent,
                provenance=tuple(ctx.untrusted),
                started_at=started_at,
            )
            await self._conclude(message, result, events)
            return
        # Stopped by a guard: a decision, not a fault, so no dead letter (a redrive would
        # stop the same way); undo what the run did, then report.
        ctx.log.warning("agent.stopped", status=status, reason=error.message)
        result = TaskResult(
            task_id=message.task_id,
            agent=message.agent,
            status=status,
            error=error,
            parent=message.parent,
            provenance=tuple(ctx.untrusted),
            compensations=tuple(await ctx.compensate()),
            started_at=started_at,
        )
        await self._conclude(message, result, events)

    async def _refuse(
        self, task: TaskRequest, delivery: Delivery, exc: AuthenticationError
    ) -> None:
        """A task whose principal cannot be trusted does not run; its id stays free."""
        structlog.get_logger("ballast.agent").warning("agent.unauthenticated", reason=str(exc))
        error = ErrorInfo(code=ErrorCode.UNAUTHENTICATED, message=str(exc), retryable=False)
        result = TaskResult(
            task_id=task.task_id,
            agent=task.agent,
            status=TaskStatus.FAILED,
            error=error,
            parent=task.parent,
            started_at=delivery.published_at,
        )
        async with UnitOfWork(self.db) as uow:
            uow.end_claim(self.service, task.task_id)
            uow.publish(event_subject("auth", "unauthenticated"), result, headers=_task(task))
            for out in _announce(result):
                uow.publish(out.subject, out.payload, headers=out.headers)

    async def _conclude(self, task: TaskRequest, result: TaskResult, extra: list[Output]) -> None:
        async with UnitOfWork(self.db) as uow:
            await _end_run(uow, result)
            uow.mark_processed(self.service, task.task_id, result.model_dump_json().encode())
            for out in [*_announce(result), *extra]:
                uow.publish(out.subject, out.payload, headers=out.headers)

    def repeat_outputs(self, message: TaskRequest, stored: bytes | None) -> Sequence[Output]:
        # A parent that delegated again after a crash gets the child's stored result.
        if stored is None or message.parent is None:
            return ()
        parent = message.parent
        subject = result_subject(parent.agent, parent.task_id)
        return [Output(subject, stored, result_headers(parent.task_id, parent.step_key))]

    async def on_failure(
        self, message: TaskRequest, delivery: Delivery, error: ErrorInfo
    ) -> Sequence[Output]:
        ctx = await self.context(message, delivery)
        compensations: list[Compensation] = await ctx.compensate()
        result = TaskResult(
            task_id=message.task_id,
            agent=message.agent,
            status=TaskStatus.FAILED,
            error=error,
            parent=message.parent,
            compensations=tuple(compensations),
            started_at=delivery.published_at,
        )
        async with UnitOfWork(self.db) as uow:
            await _end_run(uow, result)
        return _announce(result)


async def _end_run(uow: UnitOfWork, result: TaskResult) -> None:
    """Record how the task ended on its run entry (sequence 0)."""
    finish_step(
        uow,
        task_id=result.task_id,
        seq=RUN_SEQ,
        status=StepStatus.COMPLETED if result.status is TaskStatus.COMPLETED else StepStatus.FAILED,
        outcome={
            "status": result.status.value,
            "error": result.error.model_dump(mode="json") if result.error else None,
            "compensations": len(result.compensations),
        },
    )


def _task(task: TaskRequest) -> dict[str, str]:
    return {Header.TASK_ID: task.task_id}


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
