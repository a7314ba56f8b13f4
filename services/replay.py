"""Replay: run an agent's code again against its journal, with no side effects.

Every step is served from the journal: nothing is published, no tool runs, no
model is called. The report says whether each step the code asked for matched
the journal and, if not, the first divergence (position, what the journal holds,
what the code asked for). With a *live model*, model steps are asked of that
model instead, while tool results still come from the journal: the report then
shows where the new model's decisions differ from the recorded ones, and the
replay stops where the new decisions would need a tool call the journal does not
have (it never executes one).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, cast

import structlog
from pydantic import BaseModel, JsonValue

from bulkheads import LoopDetectedError, LoopGuard
from contracts.errors import ErrorCode, ErrorInfo
from contracts.principal import Principal
from contracts.tasks import TaskRequest
from contracts.trust import Provenance
from outbox import JournalEntry
from outbox.journal import RUN_SEQ
from services.agent_context import AgentContext
from services.context_window import fit_or_summarize
from services.conversation import Conversation
from services.errors import BallastError, BudgetExceededError, TaskFailedError, ToolCallError
from services.llm import ChatMessage, ChatModel, ChatReply, ToolDefinition
from services.memory import Memory
from services.retrieval import Retrieval
from services.specs import AgentSpec, to_json_value
from services.spotlight import spotlight
from services.steps import (
    StepKind,
    StepWork,
    is_failure,
    is_finished,
    provenance_of,
    replay,
)


class Divergence(BaseModel):
    seq: int
    expected: str
    got: str


class DecisionChange(BaseModel):
    """A model step where the live model answered differently from the recorded one."""

    seq: int
    recorded: JsonValue
    live: JsonValue


class ReplayReport(BaseModel):
    task_id: str
    agent: str
    steps_matched: int
    steps_in_journal: int
    matched: bool
    """True when the code asked for exactly the journal's steps, in order."""
    divergence: Divergence | None = None
    ended: str
    """How the replayed code ended: completed, failed (the recorded error, or what the
    code raised), stopped (where the recorded run waits), diverged, or live_model_failed."""
    output: JsonValue = None
    error: str | None = None
    live_model: str | None = None
    decision_changes: list[DecisionChange] = []


class Diverged(BallastError):
    """The replayed code left the journal."""

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(
            f"step {divergence.seq}: journal has {divergence.expected}, code asks {divergence.got}"
        )
        self.divergence = divergence


class Stopped(BallastError):
    """The recorded run stopped here (it waits for a result or an approval)."""


class LiveModelFailed(BallastError):
    """The live model could not answer a model step."""


class ReplayContext:
    """Looks like an `AgentContext` to agent code; answers from the journal only."""

    def __init__(
        self,
        spec: AgentSpec,
        task: TaskRequest,
        journal: Mapping[int, JournalEntry],
        live_model: ChatModel | None,
    ) -> None:
        self.spec = spec
        self.task = task
        self._journal = journal
        self._live = live_model
        self._seq = 0
        self._guard = LoopGuard(spec.loop_guard)
        self.matched = 0
        self.changes: list[DecisionChange] = []
        self.untrusted: list[Provenance] = (
            []
            if task.input_trusted
            else [Provenance(source="task_input", document_id=task.task_id, trusted=False)]
        )
        self.memory = Memory(self, task, spec.name)
        self.retrieve = Retrieval(self, task, retriever=None)
        self.conversation = Conversation(self, task, spec.session)
        self.log = structlog.get_logger("ballast.replay").bind(agent=spec.name)

    @property
    def principal(self) -> Principal:
        return self.task.principal

    @property
    def tainted(self) -> bool:
        return bool(self.untrusted)

    def _take(self, kind: StepKind, name: str) -> JournalEntry:
        self._seq += 1
        entry = self._journal.get(self._seq)
        got = f"{kind.value} {name!r}"
        if entry is None:
            raise Diverged(Divergence(seq=self._seq, expected="no step (the run ended)", got=got))
        if entry.kind != kind.value or entry.name != name:
            raise Diverged(
                Divergence(seq=self._seq, expected=f"{entry.kind} {entry.name!r}", got=got)
            )
        self.matched += 1
        if not is_finished(entry):
            raise Stopped(f"step {self._seq} ({got}) was still waiting when the run was recorded")
        for source in provenance_of(entry):
            if not source.trusted and source not in self.untrusted:
                self.untrusted.append(source)
        return entry

    def _outcome(self, entry: JournalEntry) -> JsonValue:
        # The loop guard counts as in the recorded run, so it stops at the same point.
        self._guard.after_step(failed=is_failure(entry))
        return replay(entry)

    async def llm(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        max_tokens: int | None = None,
    ) -> ChatReply:
        fitted = await fit_or_summarize(messages, self.spec.context, self._summary)
        return await self._llm(fitted.messages, tools, max_tokens)

    async def _summary(self, messages: list[ChatMessage], limit: int) -> str:
        return (await self._llm(messages, (), limit)).content or ""

    async def _llm(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolDefinition],
        max_tokens: int | None,
    ) -> ChatReply:
        name = self.spec.model.name if self.spec.model else "?"
        entry = self._take(StepKind.LLM, name)
        recorded = ChatReply.model_validate(self._outcome(entry))
        if self._live is None:
            return recorded
        try:
            live = await self._live.complete(messages, tools=tools, max_tokens=max_tokens)
        except Exception as exc:
            raise LiveModelFailed(
                f"step {entry.seq}: the live model {self._live.name} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        before, after = _decision(recorded), _decision(live)
        if before != after:
            self.changes.append(DecisionChange(seq=entry.seq, recorded=before, live=after))
        return live

    async def tool(self, name: str, args: Mapping[str, Any] | BaseModel, **_: Any) -> JsonValue:
        data = args.model_dump(mode="json") if isinstance(args, BaseModel) else dict(args)
        if name not in self.spec.tools:
            self._refused(f"agent {self.spec.name} may not call {name}: not on its list")
        self._guard.before_call(name, data)
        return self._outcome(self._take(StepKind.TOOL, name))

    async def delegate(self, agent: str, input: Mapping[str, Any]) -> JsonValue:
        if agent not in self.spec.delegates:
            self._refused(f"agent {self.spec.name} may not delegate to {agent}: not on its list")
        return self._outcome(self._take(StepKind.DELEGATE, agent))

    def _refused(self, reason: str) -> NoReturn:
        # As in the recorded run: a step number is used, nothing is journaled.
        self._seq += 1
        self._guard.after_step(failed=True)
        raise ToolCallError(
            reason, ErrorInfo(code=ErrorCode.FORBIDDEN, message=reason, retryable=False)
        )

    async def step(self, name: str, fn: Callable[[], Any]) -> JsonValue:
        return self._outcome(self._take(StepKind.STEP, name))

    async def local_step(
        self,
        kind: StepKind,
        name: str,
        request: JsonValue,
        work: StepWork,
        *,
        provenance: Callable[[JsonValue], list[Provenance]] | None = None,
    ) -> JsonValue:
        """Memory, session and retrieval steps answer from the journal: what the run saw."""
        return replay(self._take(kind, name))

    def untrusted_message(
        self, text: str, *, source: str, document_id: str | None = None, chunk: str | None = None
    ) -> ChatMessage:
        provenance = Provenance(source=source, document_id=document_id, chunk=chunk, trusted=False)
        if provenance not in self.untrusted:
            self.untrusted.append(provenance)
        return ChatMessage(role="user", content=spotlight(text, provenance))


def _decision(reply: ChatReply) -> JsonValue:
    """What a reply decided: its text, or the tools it asked for."""
    if reply.tool_calls:
        return [{"tool": c.name, "args": c.arguments} for c in reply.tool_calls]
    return reply.content


def task_of(journal: Mapping[int, JournalEntry], task_id: str) -> TaskRequest:
    """The task as recorded on its run entry."""
    run = journal.get(RUN_SEQ)
    if run is None or not isinstance(run.request, dict):
        raise BallastError(f"task {task_id} has no run entry in this database's journal")
    header = run.request
    return TaskRequest(
        task_id=task_id,
        agent=header["agent"],
        input=header.get("input") or {},
        input_trusted=bool(header.get("input_trusted")),
        session_id=header.get("session_id"),
        principal=Principal(
            user_id=header["user_id"],
            tenant=header["tenant"],
            scopes=tuple(header.get("scopes", ())),
        ),
    )


async def replay_run(
    spec: AgentSpec,
    journal: Mapping[int, JournalEntry],
    task_id: str,
    live_model: ChatModel | None = None,
) -> ReplayReport:
    """Re-run ``spec``'s code for ``task_id`` against ``journal``."""
    task = task_of(journal, task_id)
    ctx = ReplayContext(spec, task, journal, live_model)
    steps = sum(1 for seq in journal if seq > 0)
    report: dict[str, Any] = {
        "task_id": task_id,
        "agent": spec.name,
        "steps_in_journal": steps,
        "live_model": live_model.name if live_model else None,
    }
    try:
        result = spec.fn(cast(AgentContext, ctx), task)
        output = to_json_value(await result if inspect.isawaitable(result) else result)
        report |= {"ended": "completed", "output": output}
    except Diverged as exc:
        report |= {"ended": "diverged", "divergence": exc.divergence, "error": str(exc)}
    except Stopped as exc:
        report |= {"ended": "stopped", "error": str(exc)}
    except LiveModelFailed as exc:
        report |= {"ended": "live_model_failed", "error": str(exc)}
    except (TaskFailedError, BudgetExceededError, LoopDetectedError) as exc:
        report |= {"ended": "failed", "error": str(exc)}
    except Exception as exc:  # the agent's own code raised, as a recorded failure may have
        report |= {"ended": "failed", "error": f"the agent raised {type(exc).__name__}: {exc}"}
    done = report["ended"] in ("completed", "failed", "stopped")
    return ReplayReport(
        **report,
        steps_matched=ctx.matched,
        matched=done and ctx.matched == steps and not ctx.changes,
        decision_changes=ctx.changes,
    )
