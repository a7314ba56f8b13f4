"""Steps of an agent run as the journal records them, and how a recorded step is replayed.

A recorded outcome is ``{"value": ...}`` or ``{"error": <ErrorInfo>}``; a completed
tool call may add ``"compensate": {"tool": ..., "args": ...}`` (its saga step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

from pydantic import JsonValue

from contracts.budget import BudgetExceeded
from contracts.errors import ErrorCode, ErrorInfo
from contracts.trust import Provenance
from outbox import JournalEntry, UnitOfWork
from outbox.journal import StepStatus
from services.errors import (
    BudgetExceededError,
    DelegationError,
    NonDeterminismError,
    SessionEndedError,
    StepFailedError,
    TaskFailedError,
    ToolCallError,
)


class StepKind(StrEnum):
    """What a journaled step was."""

    LLM = "llm"
    TOOL = "tool"
    DELEGATE = "delegate"
    STEP = "step"
    COMPENSATION = "compensation"
    RUN = "run"
    """Sequence 0: the run itself (who, what, caps); finished with how the task ended."""
    MEMORY = "memory"
    """A read or write of ``ctx.memory``."""
    RETRIEVE = "retrieve"
    """Passages retrieved for a query (``ctx.retrieve``), with their provenance."""
    SESSION = "session"
    """Loading or extending the conversation of the task's session (``ctx.conversation``)."""


LOCAL_KINDS = frozenset(
    {StepKind.MEMORY, StepKind.SESSION, StepKind.RETRIEVE, StepKind.COMPENSATION}
)
"""Steps the loop guard does not count: bookkeeping, not the agent's actions."""


StepWork = Callable[[UnitOfWork], Awaitable[JsonValue]]
"""A local step's work, done in the transaction that records the step."""


class LocalSteps(Protocol):
    """Runs one journaled step against the database: for real in a run, from the journal
    in a replay. ``work`` gets the transaction the step is recorded in; ``provenance``
    says where the value's content came from (recorded with it)."""

    async def local_step(
        self,
        kind: StepKind,
        name: str,
        request: JsonValue,
        work: StepWork,
        *,
        provenance: Callable[[JsonValue], list[Provenance]] | None = None,
    ) -> JsonValue: ...


_FAILURES: dict[str, type[TaskFailedError]] = {
    StepKind.TOOL: ToolCallError,
    StepKind.COMPENSATION: ToolCallError,
    StepKind.DELEGATE: DelegationError,
    StepKind.SESSION: SessionEndedError,
}


def completed(value: JsonValue, **extra: Any) -> dict[str, Any]:
    return {"value": value, **extra}


def failed(error: ErrorInfo) -> dict[str, Any]:
    return {"error": error.model_dump(mode="json")}


def check_same_step(entry: JournalEntry, kind: StepKind, name: str) -> None:
    """Raise `NonDeterminismError` if the journal holds another step at this position."""
    if entry.kind != kind.value or entry.name != name:
        raise NonDeterminismError(
            f"task {entry.task_id}, step {entry.seq}: the journal holds {entry.kind} "
            f"{entry.name!r} but the code now asks for {kind.value} {name!r}; the agent's code "
            "changed while this task was running (finish or fail such tasks before deploying "
            "code that reorders steps)"
        )


def is_finished(entry: JournalEntry) -> bool:
    return entry.status != StepStatus.PENDING.value


def is_failure(entry: JournalEntry) -> bool:
    return entry.status == StepStatus.FAILED.value


def provenance_of(entry: JournalEntry) -> list[Provenance]:
    """The sources of a finished step's output, as recorded."""
    outcome = entry.outcome if isinstance(entry.outcome, dict) else {}
    return [Provenance.model_validate(p) for p in outcome.get("provenance", ())]


def replay(entry: JournalEntry) -> JsonValue:
    """The recorded value of a finished step, or its recorded failure raised again."""
    outcome = entry.outcome or {}
    if entry.status == StepStatus.COMPLETED.value:
        value: JsonValue = outcome.get("value")
        return value
    error = ErrorInfo.model_validate(outcome["error"])
    if error.code is ErrorCode.BUDGET_EXCEEDED:
        raise BudgetExceededError(BudgetExceeded.model_validate(error.details))
    failure = _FAILURES.get(entry.kind, StepFailedError)
    raise failure(f"{entry.kind} {entry.name} failed: {error.message}", error)
