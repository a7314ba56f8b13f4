"""`AgentContext`: everything an agent does to the world, made durable.

Each call on the context is a *step* with a deterministic key
``<task_id>:<seq>``, numbered in the order the code makes the calls (taken at
the call, so ``asyncio.gather`` of several calls numbers them as written). A
step's outcome is in the journal before the code continues. When the run is
executed again (the worker died, the message was redelivered, an operator
replays it), steps already in the journal return their recorded outcome and
nothing runs twice; a step that asks for something else than the journal holds
at its position stops the run with a `NonDeterminismError`.

- ``ctx.llm``: reserve budget (input estimate, ``max_tokens``), call the model
  through its circuit breaker, record the reply and settle the budget.
- ``ctx.tool``: the journal entry, the budget reservation and the `ToolCall`
  outbox row commit in one transaction; the result comes back over the bus.
- ``ctx.delegate``: the same with a child `TaskRequest`.
- ``ctx.step``: any other non-deterministic work (time, randomness, HTTP).
- ``ctx.memory`` and ``ctx.conversation``: scoped memory and the conversation of the
  task's session (`services.memory`, `services.conversation`), in journaled steps.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import structlog
from pydantic import BaseModel, JsonValue

from bulkheads import LoopGuard
from contracts.approval import ApprovalGrant, ApprovalRequest, ApprovalStatus
from contracts.budget import BudgetMetric
from contracts.errors import ErrorCode, ErrorInfo
from contracts.principal import Principal
from contracts.subjects import Header, event_subject, task_subject, tool_subject
from contracts.tasks import Compensation, ParentRef, TaskRequest, TaskResult, TaskStatus
from contracts.tools import ToolCall, ToolResult, ToolStatus
from contracts.trust import Provenance
from contracts.wire import utc_now
from outbox import Database, JournalEntry, UnitOfWork
from outbox.errors import SessionClosedError
from outbox.journal import RUN_SEQ, StepStatus, finish_step, record_step
from services.approvals import Approvals, StoredApproval
from services.breakers import SharedBreakers, is_outage
from services.budgets import RunBudget, Usage, model_cost
from services.context_window import fit_or_summarize
from services.conversation import Conversation
from services.errors import (
    BudgetExceededError,
    ConfigurationError,
    DelegationError,
    HandlerError,
    ModelError,
    RunOvertakenError,
    RunSuspended,
    SessionEndedError,
    StepFailedError,
    TaskFailedError,
    ToolCallError,
)
from services.llm import ChatMessage, ChatModel, ChatReply, ToolDefinition
from services.memory import Memory
from services.metrics import Metrics
from services.pricing import MICRO, ModelPrice
from services.rate_limits import RateLimitedError, SharedRateLimiter
from services.redaction import Redactor
from services.results import ResultWaiter
from services.retrieval import FullTextRetriever, Retrieval
from services.specs import AgentSpec, to_json_value
from services.spotlight import spotlight
from services.steps import (
    LOCAL_KINDS,
    StepKind,
    StepWork,
    check_same_step,
    completed,
    failed,
    is_failure,
    is_finished,
    provenance_of,
    replay,
)
from services.telemetry import tracer

_CHILD_TASK_NAMESPACE = uuid.UUID("6f1c1c8e-8d1e-4a53-9a57-6b1f2f7e4d10")

MAX_RATE_LIMITED = 5
"""429 answers in a row a model call waits out before the run is retried later."""

MAX_PROVENANCE = 20
"""Untrusted sources sent with a call (the newest); the flag says the rest."""

Compensate: TypeAlias = (
    "tuple[str, Mapping[str, Any]] | Callable[[JsonValue], tuple[str, Mapping[str, Any]]] | None"
)
"""A saga step: the tool (and its arguments) that undoes a completed call, or a function
of the call's output that gives them."""


@dataclass(slots=True)
class Step:
    """A step being taken: its position, what it is, and what it asked for."""

    seq: int
    kind: StepKind
    name: str
    request: Any = None
    started_at: datetime = field(default_factory=utc_now)
    """When the code asked for the step, so the journal shows how long the work took."""


@dataclass(frozen=True, slots=True)
class AgentRuntime:
    """What all runs of one agent in this process share."""

    db: Database
    waiter: ResultWaiter
    breakers: SharedBreakers
    prices: Mapping[str, ModelPrice]
    approvals: Approvals
    limiter: SharedRateLimiter
    """Shared rate limits of model providers."""
    approval_ttl: timedelta
    redact: Redactor
    """Removes secrets from what goes into the journal."""
    metrics: Metrics


class AgentContext:
    """The agent's door to the world; one per execution of a task."""

    def __init__(
        self,
        spec: AgentSpec,
        task: TaskRequest,
        *,
        runtime: AgentRuntime,
        journal: dict[int, JournalEntry],
        resumed: bool,
        principal_token: str | None = None,
    ) -> None:
        self.spec = spec
        self.task = task
        self._rt = runtime
        self._journal = journal
        self._resumed = resumed
        self._principal_token = principal_token
        self._seq = 0
        self.untrusted: list[Provenance] = (
            []
            if task.input_trusted
            else [Provenance(source="task_input", document_id=task.task_id, trusted=False)]
        )
        """Untrusted content that entered this run (and so, possibly, its model's context)."""
        self.retrieved: list[Provenance] = []
        """What ``ctx.retrieve`` brought into this run, trusted or not."""
        self._guard = LoopGuard(spec.loop_guard)
        self.budget = RunBudget(spec.budget, task)
        self.memory = Memory(self, task, spec.name)
        self.retrieve = Retrieval(self, task, spec.retriever or FullTextRetriever(runtime.db))
        self.conversation = Conversation(self, task, spec.session)
        self.log = structlog.get_logger("ballast.agent").bind(agent=spec.name)

    @property
    def principal(self) -> Principal:
        return self.task.principal

    async def begin(self) -> None:
        """Record the run (sequence 0) on its first execution: what traces and listings show."""
        if RUN_SEQ in self._journal:
            return
        task = self.task
        request: dict[str, Any] = {
            "agent": task.agent,
            "user_id": task.principal.user_id,
            "tenant": task.principal.tenant,
            "scopes": list(task.principal.scopes),
            "session_id": task.session_id,
            "parent": task.parent.model_dump(mode="json") if task.parent else None,
            "input": task.input,
            "input_trusted": task.input_trusted,
            "caps": [
                {"scope": cap.scope_key, "metric": cap.metric, "limit": cap.limit}
                for cap in self.budget.caps
            ],
        }
        async with UnitOfWork(self._rt.db) as uow:
            self._journal[RUN_SEQ] = record_step(
                uow, task_id=task.task_id, seq=RUN_SEQ, kind=StepKind.RUN.value,
                name=task.agent, request=self._rt.redact(request), status=StepStatus.PENDING,
            )  # fmt: skip

    @property
    def journal(self) -> Mapping[int, JournalEntry]:
        """The steps recorded so far (as loaded, plus those of this execution)."""
        return self._journal

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def key(self, seq: int) -> str:
        """The step key: ``<task_id>:<seq>``, or ``<task_id>:c<n>`` for compensation n."""
        return f"{self.task.task_id}:{seq}" if seq > 0 else f"{self.task.task_id}:c{-seq}"

    def _recorded(self, step: Step) -> JournalEntry | None:
        entry = self._journal.get(step.seq)
        if entry is not None:
            check_same_step(entry, step.kind, step.name)
        return entry

    def _replay(self, entry: JournalEntry) -> JsonValue:
        if entry.kind not in LOCAL_KINDS:
            self._guard.after_step(failed=is_failure(entry))
        self._saw(entry)
        return replay(entry)

    def _saw(self, entry: JournalEntry) -> None:
        """Note where a finished step's content came from."""
        sources = provenance_of(entry)
        self._taint(sources)
        if entry.kind == StepKind.RETRIEVE:
            self.retrieved.extend(p for p in sources if p not in self.retrieved)

    def _taint(self, provenance: Sequence[Provenance]) -> None:
        for source in provenance:
            if not source.trusted and source not in self.untrusted:
                self.untrusted.append(source)

    @property
    def tainted(self) -> bool:
        """Whether untrusted content entered this run."""
        return bool(self.untrusted)

    def untrusted_message(
        self, text: str, *, source: str, document_id: str | None = None, chunk: str | None = None
    ) -> ChatMessage:
        """A user message carrying outside ``text`` as spotlighted data; taints the run."""
        provenance = Provenance(source=source, document_id=document_id, chunk=chunk, trusted=False)
        self._taint([provenance])
        return ChatMessage(role="user", content=spotlight(text, provenance))

    # ------------------------------------------------------------------ model

    async def llm(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        max_tokens: int | None = None,
    ) -> ChatReply:
        """Ask the agent's model; ``max_tokens`` (default: the agent's) bounds the reservation.

        The conversation is first fitted to the agent's `ContextPolicy` (what it drops
        is journaled with the call; a summary is a model call of its own).
        """
        with tracer.start_as_current_span("ballast.llm", attributes=self._attributes()):
            fitted = await fit_or_summarize(messages, self.spec.context, self._summary)
            return await self._llm(fitted.messages, tools, max_tokens, trimmed=fitted.record)

    async def _summary(self, messages: list[ChatMessage], limit: int) -> str:
        return (await self._llm(messages, (), limit)).content or ""

    def _attributes(self) -> dict[str, str]:
        return {"ballast.task_id": self.task.task_id, "ballast.agent": self.spec.name}

    async def _llm(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolDefinition],
        max_tokens: int | None,
        *,
        trimmed: dict[str, Any] | None = None,
    ) -> ChatReply:
        model = self._model()
        step = Step(self._next(), StepKind.LLM, model.name)
        size = sum(len(m.content.encode()) for m in messages)
        if size > self.spec.max_context_bytes:
            error = ErrorInfo(
                code=ErrorCode.TOO_LARGE,
                message=(
                    f"the conversation is {size} bytes, over this agent's limit of "
                    f"{self.spec.max_context_bytes}; trim it before asking the model"
                ),
                retryable=False,
            )
            raise StepFailedError(error.message, error)
        entry = self._recorded(step)
        if entry is not None and is_finished(entry):
            return ChatReply.model_validate(self._replay(entry))
        limit = max_tokens or self.spec.max_tokens
        step.request = {
            "messages": [m.model_dump(mode="json") for m in messages],
            "tools": [t.model_dump(mode="json") for t in tools],
            "max_tokens": limit,
            # What untrusted content could have reached the model by now.
            "untrusted": [p.model_dump(mode="json") for p in self.untrusted],
            # What was retrieved for this run so far, trusted or not.
            "retrieved": [p.model_dump(mode="json") for p in self.retrieved],
        }
        if trimmed is not None:
            step.request["trimmed"] = trimmed  # what the context bound left out
        price = self._rt.prices.get(model.name)
        # Upper bounds, so that settling can never exceed what was reserved:
        # a token is at least one byte, and each message adds a few tokens of framing.
        estimate_in = sum(len(m.content.encode()) + 8 for m in messages)
        await self._reserve_alone(
            step,
            {
                BudgetMetric.STEPS: 1,
                BudgetMetric.INPUT_TOKENS: estimate_in,
                BudgetMetric.OUTPUT_TOKENS: limit,
                BudgetMetric.COST_USD: model_cost(
                    price, model.name, self.budget, (estimate_in, limit)
                ),
            },
        )
        try:
            reply = await self._call_model(model, messages, tools, limit, estimate_in + limit)
        except ModelError as exc:
            if exc.retryable:
                raise  # not journaled: the run is retried and asks again
            error = ErrorInfo.from_exception(exc, code=ErrorCode.PROVIDER_ERROR, retryable=False)
            await self._record(step, failed(error), {})
            self._guard.after_step(failed=True)
            raise StepFailedError(f"model {model.name} refused the request: {exc}", error) from exc
        tokens = (reply.usage.input_tokens, reply.usage.output_tokens)
        cost = model_cost(price, model.name, self.budget, tokens)
        spent: Usage = {
            BudgetMetric.STEPS: 1,
            BudgetMetric.INPUT_TOKENS: tokens[0],
            BudgetMetric.OUTPUT_TOKENS: tokens[1],
            BudgetMetric.COST_USD: cost,
        }
        usage = {
            "model": model.name,
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "cost_micro_usd": cost,
        }
        await self._record(step, completed(reply.model_dump(mode="json")), spent, usage=usage)
        metrics = self._rt.metrics
        metrics.tokens.labels(self.spec.name, model.name, "input").inc(tokens[0])
        metrics.tokens.labels(self.spec.name, model.name, "output").inc(tokens[1])
        metrics.cost.labels(self.spec.name, model.name).inc(cost / MICRO)
        self._guard.after_step(failed=False)
        return reply

    async def _call_model(
        self,
        model: ChatModel,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolDefinition],
        max_tokens: int,
        tokens: int,
    ) -> ChatReply:
        """Within the provider's shared rate limit, through the model's breaker; a 429
        pauses the model for every replica and the call waits its turn again."""
        deadline = self.task.deadline.timestamp() if self.task.deadline else None
        tenant = self.principal.tenant
        for _ in range(MAX_RATE_LIMITED):
            await self._rt.limiter.acquire(model.name, tenant, tokens, deadline)
            try:
                return await self._rt.breakers.call(
                    f"llm.{model.name}",
                    lambda: model.complete(messages, tools=tools, max_tokens=max_tokens),
                    counts_as_failure=is_outage,
                )
            except RateLimitedError as exc:
                self.log.warning(
                    "llm.rate_limited", model=model.name, retry_after_s=exc.retry_after_s
                )
                await self._rt.limiter.pause(model.name, tenant, exc.retry_after_s)
        raise ModelError(
            f"{model.name} answered 429 (rate limited) {MAX_RATE_LIMITED} times in a row; "
            "check its rate limits (BALLAST_RATE_LIMITS) against the provider's",
            retryable=True,
        )

    def _model(self) -> ChatModel:
        if self.spec.model is None:
            raise ConfigurationError(
                f"agent {self.spec.name} called ctx.llm but was declared without a model"
            )
        return self.spec.model

    # ------------------------------------------------------------------ tools and children

    def tool(
        self,
        name: str,
        args: Mapping[str, Any] | BaseModel,
        *,
        compensate: Compensate = None,
    ) -> Awaitable[JsonValue]:
        """Call tool ``name``; its output, or `ToolCallError` if it failed for good.

        ``compensate`` registers the call that undoes this one if the task fails later.
        """
        data = args.model_dump(mode="json") if isinstance(args, BaseModel) else dict(args)
        step = Step(self._next(), StepKind.TOOL, name, {"args": data})
        if name not in self.spec.tools:
            return self._refused(f"agent {self.spec.name} may not call {name}: not on its list")
        return self._spanned(f"ballast.tool {name}", self._tool(step, compensate))

    async def _spanned(self, name: str, work: Awaitable[JsonValue]) -> JsonValue:
        with tracer.start_as_current_span(name, attributes=self._attributes()):
            return await work

    def delegate(self, agent: str, input: Mapping[str, Any]) -> Awaitable[JsonValue]:
        """Run a child task on ``agent``; its output, or `DelegationError` if it failed."""
        step = Step(self._next(), StepKind.DELEGATE, agent)
        if agent not in self.spec.delegates:
            return self._refused(
                f"agent {self.spec.name} may not delegate to {agent}: not on its list",
                DelegationError,
            )
        return self._spanned(f"ballast.delegate {agent}", self._delegate(step, dict(input)))

    async def _refused(
        self, reason: str, error_type: type[TaskFailedError] = ToolCallError
    ) -> JsonValue:
        # Decided by the agent's own declaration, so the same on every execution:
        # nothing to journal, nothing sent.
        self._guard.after_step(failed=True)
        raise error_type(
            reason, ErrorInfo(code=ErrorCode.FORBIDDEN, message=reason, retryable=False)
        )

    async def _tool(self, step: Step, compensate: Compensate) -> JsonValue:
        saga = step.kind is StepKind.COMPENSATION
        args = step.request["args"]
        entry = self._recorded(step)
        if not saga:
            self._guard.before_call(step.name, args)
        if entry is not None and is_finished(entry):
            return self._replay(entry)
        key = self.key(step.seq)
        call = ToolCall(
            call_id=key,
            tool=step.name,
            args=args,
            task_id=self.task.task_id,
            agent=self.spec.name,
            principal=self.task.principal,
            deadline=None if saga else self.task.deadline,
            untrusted_context=self.tainted,
            provenance=tuple(self.untrusted[-MAX_PROVENANCE:]),
        )
        cost: Usage = {} if saga else {BudgetMetric.STEPS: 1, BudgetMetric.TOOL_CALLS: 1}
        data = await self._request(step, tool_subject(step.name), call, key, cost, sent=entry)
        result = ToolResult.model_validate_json(data)
        if result.error is not None and result.error.code is ErrorCode.APPROVAL_REQUIRED:
            result = await self._approved(step, call, result)
        if result.status is ToolStatus.OK:
            outcome = completed(result.output, **_compensation(compensate, result.output))
            outcome["provenance"] = [p.model_dump(mode="json") for p in result.provenance]
        else:
            assert result.error is not None  # guaranteed by the model
            outcome = failed(result.error)
        outcome["attempts"] = result.attempts
        return self._replay(await self._finish(step, outcome, cost))

    async def _approved(self, step: Step, call: ToolCall, refused: ToolResult) -> ToolResult:
        """The result of ``call`` once a human decided; suspends the run until then."""
        approvals = self._rt.approvals
        found = await approvals.get(self.spec.name, call.call_id)
        if found is None:
            assert refused.error is not None  # an approval_required result has one
            request = ApprovalRequest(
                approval_id=call.call_id,
                task_id=self.task.task_id,
                agent=self.spec.name,
                tool=call.tool,
                args=call.args,
                principal=self.task.principal,
                reason=refused.error.message,
                expires_at=utc_now() + self._rt.approval_ttl,
            )
            stored = StoredApproval(
                request=request,
                task=self.task.model_dump_json(),
                principal_token=self._principal_token,
            )
            if await approvals.request(stored):
                async with UnitOfWork(self._rt.db) as uow:
                    uow.publish(
                        event_subject("approval", "requested"), request, headers=self._headers()
                    )
                self.log.warning("approval.requested", tool=call.tool, reason=request.reason)
            raise RunSuspended(call.call_id)
        decided = found[0].request
        if decided.status is ApprovalStatus.PENDING:
            raise RunSuspended(call.call_id)
        if decided.status is not ApprovalStatus.APPROVED or decided.grant is None:
            error = ErrorInfo(
                code=ErrorCode.APPROVAL_DENIED,
                message=f"{call.tool} was not approved ({decided.status.value})",
                retryable=False,
            )
            return refused.model_copy(update={"error": error})
        granted = call.model_copy(
            update={"approval": ApprovalGrant.model_validate_json(decided.grant)}
        )
        key = self.key(step.seq)
        async with self._rt.waiter.expect(
            self.task.task_id, key, scan_first=True, accept=_not_awaiting_approval
        ) as pending:
            async with UnitOfWork(self._rt.db) as uow:
                # A new message id: the first publish of this call may still be deduplicated.
                uow.publish(
                    tool_subject(call.tool), granted, message_id=f"{key}:approved",
                    headers=self._headers(),
                )  # fmt: skip
            return ToolResult.model_validate_json(await pending.get())

    async def _delegate(self, step: Step, input: dict[str, Any]) -> JsonValue:
        entry = self._recorded(step)
        if entry is not None and is_finished(entry):
            return self._replay(entry)
        key = self.key(step.seq)
        child = TaskRequest(
            task_id=uuid.uuid5(_CHILD_TASK_NAMESPACE, key).hex,
            agent=step.name,
            input=input,
            principal=self.task.principal,  # a child never has more rights than its parent
            session_id=self.task.session_id,
            parent=ParentRef(agent=self.spec.name, task_id=self.task.task_id, step_key=key),
            deadline=self.task.deadline,
        )
        step.request = {"input": input, "task_id": child.task_id}
        cost: Usage = {BudgetMetric.STEPS: 1}
        subject = task_subject(step.name)
        data = await self._request(step, subject, child, child.task_id, cost, sent=entry)
        result = TaskResult.model_validate_json(data)
        if result.status is TaskStatus.COMPLETED:
            outcome = completed(result.output)
            outcome["provenance"] = [p.model_dump(mode="json") for p in result.provenance]
        else:
            assert result.error is not None  # guaranteed by the model
            outcome = failed(result.error)
        return self._replay(await self._finish(step, outcome, cost))

    async def _request(
        self,
        step: Step,
        subject: str,
        message: BaseModel,
        message_id: str,
        cost: Usage,
        *,
        sent: JournalEntry | None,
    ) -> bytes:
        """Send ``message`` (unless the journal says it was sent) and wait for its result."""
        key = self.key(step.seq)
        scan = sent is not None or self._resumed
        async with self._rt.waiter.expect(self.task.task_id, key, scan_first=scan) as pending:
            if sent is None:
                try:
                    async with UnitOfWork(self._rt.db) as uow:
                        await self.budget.reserve(uow, key, cost)
                        self._journal[step.seq] = record_step(
                            uow, task_id=self.task.task_id, seq=step.seq, kind=step.kind.value,
                            name=step.name, request=self._rt.redact(step.request),
                            status=StepStatus.PENDING,
                        )  # fmt: skip
                        headers = self._headers()
                        uow.publish(subject, message, message_id=message_id, headers=headers)
                except BudgetExceededError as exc:
                    self._journal.pop(step.seq, None)
                    await self._refuse(step, exc)
                    raise
            return await pending.get()

    def _headers(self) -> dict[str, str]:
        headers = {Header.TASK_ID: self.task.task_id}
        if self._principal_token:
            # Forwarded unchanged: a child or a tool gets exactly the admitted principal.
            headers[Header.PRINCIPAL] = self._principal_token
        if self.task.deadline is not None:
            headers[Header.DEADLINE] = self.task.deadline.isoformat()
        return headers

    # ------------------------------------------------------------------ any other work

    async def step(self, name: str, fn: Callable[[], Any]) -> JsonValue:
        """Run ``fn`` (sync or async) once for this task and journal what it returned.

        Its value must be JSON data (or a pydantic model). A retryable exception is
        not journaled (the run is retried and ``fn`` runs again); a
        ``HandlerError(retryable=False)`` is journaled and raised as `StepFailedError`,
        also on every re-execution.
        """
        step = Step(self._next(), StepKind.STEP, name)
        entry = self._recorded(step)
        if entry is not None and is_finished(entry):
            return self._replay(entry)
        await self._reserve_alone(step, {BudgetMetric.STEPS: 1})
        try:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
        except HandlerError as exc:
            if exc.retryable:
                raise
            error = ErrorInfo.from_exception(exc, code=ErrorCode.HANDLER_ERROR, retryable=False)
            await self._record(step, failed(error), {})
            self._guard.after_step(failed=True)
            raise StepFailedError(f"step {name} failed: {exc}", error) from exc
        output = to_json_value(value)
        await self._record(step, completed(output), {BudgetMetric.STEPS: 1})
        self._guard.after_step(failed=False)
        return output

    async def local_step(
        self,
        kind: StepKind,
        name: str,
        request: JsonValue,
        work: StepWork,
        *,
        provenance: Callable[[JsonValue], list[Provenance]] | None = None,
    ) -> JsonValue:
        """Do ``work`` in the transaction that journals it (memory, session, retrieval).

        Not charged to the budget and not counted by the loop guard: bookkeeping of
        the run, not an action. A closed session is journaled as the step's failure.
        """
        step = Step(self._next(), kind, name, request)
        entry = self._recorded(step)
        if entry is not None and is_finished(entry):
            return self._replay(entry)
        error: ErrorInfo | None = None
        value: JsonValue = None
        async with UnitOfWork(self._rt.db) as uow:
            try:
                value = await work(uow)
                sources = provenance(value) if provenance else []
                outcome = completed(value, provenance=[p.model_dump(mode="json") for p in sources])
            except SessionClosedError as exc:
                error = ErrorInfo(code=ErrorCode.SESSION_CLOSED, message=str(exc), retryable=False)
                outcome = failed(error)
            self._journal[step.seq] = record_step(
                uow, task_id=self.task.task_id, seq=step.seq, kind=kind.value, name=name,
                request=self._rt.redact(request),
                status=StepStatus.FAILED if error else StepStatus.COMPLETED,
                outcome=self._rt.redact(outcome), started_at=step.started_at,
            )  # fmt: skip
        if error is not None:
            raise SessionEndedError(error.message, error)
        self._saw(self._journal[step.seq])
        return value

    # ------------------------------------------------------------------ journal and budget

    async def _reserve_alone(self, step: Step, amounts: Usage) -> None:
        """Reserve before local work (a model call, a step); skipped when nothing is capped.

        Raises `RunOvertakenError` if another delivery of this run has recorded the step
        meanwhile: that record settled the step's reservation, so one made now would never
        be settled (recording the step again fails), and the step would run twice.
        """
        if not self.budget.caps:
            return
        try:
            async with UnitOfWork(self._rt.db) as uow:
                recorded = await uow.session.get(JournalEntry, (self.task.task_id, step.seq))
                if recorded is not None:
                    raise RunOvertakenError(
                        f"step {step.seq} of task {self.task.task_id} was recorded by another "
                        "delivery of this run; retried, this delivery replays it"
                    )
                await self.budget.reserve(uow, self.key(step.seq), amounts)
        except BudgetExceededError as exc:
            await self._refuse(step, exc)
            raise

    async def _refuse(self, step: Step, exc: BudgetExceededError) -> None:
        # Journaled, so that a re-executed run stops at the same step for the same reason.
        await self._record(step, failed(exc.info()), {})
        refused = exc.exceeded
        self._rt.metrics.budget_rejections.labels(
            self.spec.name, refused.scope.value, refused.metric.value
        ).inc()

    async def _record(
        self,
        step: Step,
        outcome: dict[str, Any],
        spent: Usage,
        *,
        usage: dict[str, Any] | None = None,
    ) -> None:
        status = StepStatus.FAILED if "error" in outcome else StepStatus.COMPLETED
        async with UnitOfWork(self._rt.db) as uow:
            self._journal[step.seq] = record_step(
                uow, task_id=self.task.task_id, seq=step.seq, kind=step.kind.value,
                name=step.name, request=self._rt.redact(step.request), status=status,
                outcome=self._rt.redact(outcome), usage=usage, started_at=step.started_at,
            )  # fmt: skip
            await self.budget.settle(uow, self.key(step.seq), spent)

    async def _finish(self, step: Step, outcome: dict[str, Any], spent: Usage) -> JournalEntry:
        """Record the outcome of a request (a tool call, a child task) without waiting for
        the commit: should a crash lose it, the resumed task asks again and the consumer's
        inbox answers with the same result, so nothing runs twice and replay is the same."""
        status = StepStatus.FAILED if "error" in outcome else StepStatus.COMPLETED
        task_id = self.task.task_id
        outcome = self._rt.redact(outcome)
        async with UnitOfWork(self._rt.db, wait=False) as uow:
            finish_step(uow, task_id=task_id, seq=step.seq, status=status, outcome=outcome)
            await self.budget.settle(uow, self.key(step.seq), spent)
        entry = self._journal[step.seq]  # pending: recorded when the request was sent
        entry.status = status.value
        entry.outcome = outcome
        return entry

    # ------------------------------------------------------------------ sagas

    async def compensate(self) -> list[Compensation]:
        """Undo the completed steps that registered a compensation, newest first.

        Each compensation is a journaled tool call (``<task_id>:c<n>``), so a run that
        fails again after a crash does not compensate twice. A compensation that fails
        is reported, and the others still run.
        """
        undo = sorted(
            (
                e
                for e in self._journal.values()
                if e.seq > 0
                and e.status == StepStatus.COMPLETED.value
                and isinstance(e.outcome, dict)
                and "compensate" in e.outcome
            ),
            key=lambda e: e.seq,
            reverse=True,
        )
        done = []
        for n, entry in enumerate(undo, start=1):
            spec = entry.outcome["compensate"]
            step = Step(-n, StepKind.COMPENSATION, spec["tool"], {"args": spec["args"]})
            try:
                await self._tool(step, None)
                ok, error = True, None
            except ToolCallError as exc:
                ok, error = False, exc.error
            done.append(
                Compensation(
                    step_key=self.key(entry.seq), tool=spec["tool"], args=spec["args"],
                    ok=ok, error=error,
                )
            )  # fmt: skip
            self.log.info("saga.compensated", step=entry.seq, tool=spec["tool"], ok=ok)
        return done


def _not_awaiting_approval(data: bytes) -> bool:
    result = ToolResult.model_validate_json(data)
    return result.error is None or result.error.code is not ErrorCode.APPROVAL_REQUIRED


def _compensation(compensate: Compensate, output: JsonValue) -> dict[str, Any]:
    if compensate is None:
        return {}
    tool, args = compensate(output) if callable(compensate) else compensate
    return {"compensate": {"tool": tool, "args": dict(args)}}
