"""Answers from the journal: what a run did and why (`ballast trace`), which tasks ran
(`ballast tasks ls`), and what they cost (`ballast costs`).

A trace reads the run's journal, the audit records of its tool calls, its budget
ledger and, recursively, the journals of its child tasks: a handful of indexed
queries whatever the number of steps.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from pydantic import BaseModel, JsonValue
from sqlmodel import col, select

from outbox import Database, JournalEntry
from outbox.journal import RUN_SEQ
from outbox.tables import AuditRecord, BudgetAccount
from services.pricing import MICRO
from services.steps import StepKind


class Decision(BaseModel):
    verdict: str
    rule: str
    reason: str


class TraceStep(BaseModel):
    """One step of a run, with what it asked, what it got, and what it cost."""

    seq: int
    key: str
    kind: str
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Decimal | None = None
    request: JsonValue = None
    outcome: JsonValue = None
    attempts: int | None = None
    decisions: list[Decision] = []
    untrusted_in_context: list[JsonValue] = []
    retrieved_in_context: list[JsonValue] = []
    """For a model call: the provenance of every passage retrieved in the run before it."""
    child: TaskTrace | None = None


class BudgetLine(BaseModel):
    scope: str
    metric: str
    limit: Decimal
    spent: Decimal


class TaskTrace(BaseModel):
    """A run: who, what, how it ended, its steps, compensations and budget."""

    task_id: str
    agent: str
    user_id: str | None
    tenant: str | None
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: JsonValue = None
    steps: list[TraceStep]
    compensations: list[TraceStep]
    budget: list[BudgetLine]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() * 1000 if start and end else None


def _amount(metric: str, value: int) -> Decimal:
    return Decimal(value) / MICRO if metric == "cost_usd" else Decimal(value)


async def trace(db: Database, task_id: str, *, depth: int = 5) -> TaskTrace | None:
    """The trace of ``task_id`` (children nested ``depth`` levels), or None if unknown."""
    async with db.session() as session:
        entries = (
            (
                await session.execute(
                    select(JournalEntry)
                    .where(col(JournalEntry.task_id) == task_id)
                    .order_by(col(JournalEntry.seq))
                )
            )
            .scalars()
            .all()
        )
        if not entries:
            return None
        keys = [f"{task_id}:{e.seq}" for e in entries if e.kind == StepKind.TOOL.value]
        audit = (
            (await session.execute(select(AuditRecord).where(col(AuditRecord.call_id).in_(keys))))
            .scalars()
            .all()
            if keys
            else []
        )
        run = next((e for e in entries if e.seq == RUN_SEQ), None)
        header: dict[str, Any] = run.request if run and isinstance(run.request, dict) else {}
        # Every capped scope: the task's own, and the user's or session's it also counts in.
        scopes = {cap["scope"] for cap in header.get("caps", [])}
        ledger = (
            (
                await session.execute(
                    select(BudgetAccount).where(col(BudgetAccount.scope_key).in_(scopes))
                )
            )
            .scalars()
            .all()
            if scopes
            else []
        )
    decisions: dict[str, list[Decision]] = defaultdict(list)
    for record in audit:
        decisions[record.call_id].append(
            Decision(verdict=record.verdict, rule=record.rule, reason=record.reason)
        )
    ended: dict[str, Any] = run.outcome if run and isinstance(run.outcome, dict) else {}
    steps: list[TraceStep] = []
    compensations: list[TraceStep] = []
    for entry in entries:
        if entry.seq == RUN_SEQ:
            continue
        step = await _step(db, task_id, entry, decisions, depth)
        (compensations if entry.seq < 0 else steps).append(step)
    spent = {(row.scope_key, row.metric): row.spent for row in ledger}
    budget = [
        BudgetLine(
            scope=cap["scope"],
            metric=cap["metric"],
            limit=_amount(cap["metric"], cap["limit"]),
            spent=_amount(cap["metric"], spent.get((cap["scope"], cap["metric"]), 0)),
        )
        for cap in header.get("caps", [])
    ]
    finished = max((s.finished_at for s in steps if s.finished_at), default=None)
    started = run.started_at if run else (steps[0].started_at if steps else None)
    return TaskTrace(
        task_id=task_id,
        agent=str(header.get("agent", entries[0].name)),
        user_id=header.get("user_id"),
        tenant=header.get("tenant"),
        status=str(ended.get("status", "running")),
        started_at=started,
        finished_at=run.finished_at if run and run.finished_at else finished,
        duration_ms=_ms(started, run.finished_at if run and run.finished_at else finished),
        error=ended.get("error"),
        steps=sorted(steps, key=lambda s: s.seq),
        compensations=sorted(compensations, key=lambda s: -s.seq),
        budget=budget,
        input_tokens=sum(int(s.input_tokens or 0) for s in steps),
        output_tokens=sum(int(s.output_tokens or 0) for s in steps),
        cost_usd=sum((s.cost_usd or Decimal(0) for s in steps), Decimal(0)),
    )


async def _step(
    db: Database,
    task_id: str,
    entry: JournalEntry,
    decisions: dict[str, list[Decision]],
    depth: int,
) -> TraceStep:
    key = f"{task_id}:{entry.seq}" if entry.seq > 0 else f"{task_id}:c{-entry.seq}"
    usage = entry.usage or {}
    request: Any = entry.request if isinstance(entry.request, dict) else {}
    outcome: Any = entry.outcome if isinstance(entry.outcome, dict) else {}
    child = None
    if entry.kind == StepKind.DELEGATE.value and depth > 0 and request.get("task_id"):
        child = await trace(db, str(request["task_id"]), depth=depth - 1)
    cost = usage.get("cost_micro_usd")
    is_llm = entry.kind == StepKind.LLM.value
    return TraceStep(
        seq=entry.seq,
        key=key,
        kind=entry.kind,
        name=entry.name,
        status=entry.status,
        started_at=entry.started_at,
        finished_at=entry.finished_at,
        duration_ms=_ms(entry.started_at, entry.finished_at),
        model=usage.get("model"),
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        cost_usd=Decimal(cost) / MICRO if cost is not None else None,
        request=_summary(entry.kind, request),
        outcome=outcome.get("value") if "value" in outcome else outcome.get("error"),
        attempts=outcome.get("attempts"),
        decisions=decisions.get(key, []),
        untrusted_in_context=request.get("untrusted", []) if is_llm else [],
        retrieved_in_context=request.get("retrieved", []) if is_llm else [],
        child=child,
    )


def _summary(kind: str, request: dict[str, Any]) -> JsonValue:
    """What a step asked for, without repeating whole conversations."""
    if kind == StepKind.LLM.value:
        messages = request.get("messages", [])
        last = messages[-1]["content"] if messages else ""
        return {"messages": len(messages), "last": str(last)[:200]}
    if kind in (StepKind.TOOL.value, StepKind.COMPENSATION.value):
        args: JsonValue = request.get("args")
        return args
    if kind == StepKind.DELEGATE.value:
        return {"task_id": request.get("task_id"), "input": request.get("input")}
    if kind in (StepKind.MEMORY.value, StepKind.RETRIEVE.value):
        return cast(JsonValue, request)
    return None


class TaskSummary(BaseModel):
    task_id: str
    agent: str
    user_id: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None


async def tasks(
    db: Database,
    *,
    agent: str | None = None,
    user: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[TaskSummary]:
    """Recent runs, newest first, filtered."""
    query = select(JournalEntry).where(col(JournalEntry.seq) == RUN_SEQ)
    if agent:
        query = query.where(col(JournalEntry.name) == agent)
    if since:
        query = query.where(col(JournalEntry.started_at) >= since)
    if until:
        query = query.where(col(JournalEntry.started_at) <= until)
    query = query.order_by(col(JournalEntry.started_at).desc()).limit(limit * 10)
    async with db.session() as session:
        runs = (await session.execute(query)).scalars().all()
    found = []
    for run in runs:
        header: dict[str, Any] = run.request if isinstance(run.request, dict) else {}
        ended: dict[str, Any] = run.outcome if isinstance(run.outcome, dict) else {}
        summary = TaskSummary(
            task_id=run.task_id,
            agent=run.name,
            user_id=header.get("user_id"),
            status=str(ended.get("status", "running")),
            started_at=run.started_at,
            finished_at=run.finished_at,
        )
        if (user is None or summary.user_id == user) and (
            status is None or summary.status == status
        ):
            found.append(summary)
        if len(found) >= limit:
            break
    return found


class CostLine(BaseModel):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


async def costs(db: Database, *, by: str, since: datetime) -> list[CostLine]:
    """Model usage since ``since`` grouped by user, agent, model, task or day."""
    async with db.session() as session:
        calls = (
            (
                await session.execute(
                    select(JournalEntry).where(
                        col(JournalEntry.kind) == StepKind.LLM.value,
                        col(JournalEntry.started_at) >= since,
                    )
                )
            )
            .scalars()
            .all()
        )
        task_ids = {c.task_id for c in calls}
        runs = (
            (
                await session.execute(
                    select(JournalEntry).where(
                        col(JournalEntry.seq) == RUN_SEQ, col(JournalEntry.task_id).in_(task_ids)
                    )
                )
            )
            .scalars()
            .all()
            if task_ids
            else []
        )
    owner = {r.task_id: r.request if isinstance(r.request, dict) else {} for r in runs}
    agent_of = {r.task_id: r.name for r in runs}
    lines: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for call in calls:
        usage = call.usage or {}
        key = {
            "user": str(owner.get(call.task_id, {}).get("user_id", "?")),
            "agent": agent_of.get(call.task_id, "?"),
            "model": str(usage.get("model", call.name)),
            "task": call.task_id,
            "day": call.started_at.date().isoformat(),
        }[by]
        line = lines[key]
        line[0] += 1
        line[1] += int(usage.get("input_tokens", 0))
        line[2] += int(usage.get("output_tokens", 0))
        line[3] += int(usage.get("cost_micro_usd", 0))
    return sorted(
        (
            CostLine(
                key=k,
                calls=v[0],
                input_tokens=v[1],
                output_tokens=v[2],
                cost_usd=Decimal(v[3]) / MICRO,
            )
            for k, v in lines.items()
        ),
        key=lambda line: line.cost_usd,
        reverse=True,
    )


def parse_since(text: str) -> timedelta:
    """'30m', '6h', '1d', '2w' as a duration."""
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"{text!r} is not a duration like 30m, 6h, 1d or 2w")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


TraceStep.model_rebuild()
