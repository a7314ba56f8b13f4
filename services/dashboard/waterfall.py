"""A task's timeline as rows of bars: the data of ``ballast trace`` laid out in time.

Each step becomes a row whose bar starts and ends where the step did, as a share
of the whole run; a delegated task's steps follow its delegate row, indented, on
the same time axis, so a slow child shows where its parent waited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue

from contracts.wire import utc_now
from services.trace import TaskTrace, TraceStep

MIN_WIDTH_PCT = 0.4
"""Instant steps still get a visible sliver."""

_DETAIL_CHARS = 600


@dataclass(frozen=True, slots=True)
class Bar:
    """One row of the waterfall."""

    depth: int
    seq: int
    kind: str
    name: str
    status: str
    offset_pct: float
    width_pct: float
    duration_ms: float | None
    tokens: str
    cost: str
    decisions: str
    request: str
    outcome: str
    untrusted_in_context: list[str]
    """Sources of untrusted content the model had seen by this step."""
    task_id: str


def _text(value: JsonValue) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"


def _source(provenance: JsonValue) -> str:
    if not isinstance(provenance, dict):
        return _text(provenance)
    parts = (provenance.get(k) for k in ("source", "document_id", "chunk"))
    return " ".join(str(p) for p in parts if p is not None)


def _bar(step: TraceStep, task_id: str, depth: int, start: datetime, span_s: float) -> Bar:
    end = step.finished_at or utc_now()
    offset = max(0.0, (step.started_at - start).total_seconds() / span_s * 100)
    width = max(MIN_WIDTH_PCT, (end - step.started_at).total_seconds() / span_s * 100)
    tokens = f"{step.input_tokens}/{step.output_tokens}" if step.input_tokens is not None else ""
    return Bar(
        depth=depth,
        seq=step.seq,
        kind=step.kind,
        name=step.name,
        status=step.status,
        offset_pct=round(min(offset, 100 - MIN_WIDTH_PCT), 3),
        width_pct=round(min(width, 100 - min(offset, 100 - MIN_WIDTH_PCT)), 3),
        duration_ms=step.duration_ms,
        tokens=tokens,
        cost=f"${step.cost_usd:.6f}" if step.cost_usd is not None else "",
        decisions=", ".join(
            d.verdict if d.rule == d.verdict else f"{d.verdict} ({d.rule})" for d in step.decisions
        ),
        request=_text(step.request),
        outcome=_text(step.outcome),
        untrusted_in_context=[_source(p) for p in step.untrusted_in_context],
        task_id=task_id,
    )


def waterfall(found: TaskTrace) -> list[Bar]:
    """The rows of ``found`` and of its children, in the order they ran."""
    start = found.started_at or utc_now()
    end = found.finished_at or utc_now()
    span_s = max((end - start).total_seconds(), 1e-6)
    rows: list[Bar] = []

    def add(trace: TaskTrace, depth: int) -> None:
        for step in [*trace.steps, *trace.compensations]:
            rows.append(_bar(step, trace.task_id, depth, start, span_s))
            if step.child is not None:
                add(step.child, depth + 1)

    add(found, 0)
    return rows
