"""The dashboard's waterfall layout: pure arithmetic over a trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.dashboard.waterfall import MIN_WIDTH_PCT, waterfall
from services.trace import Decision, TaskTrace, TraceStep

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def _step(seq: int, kind: str, start: float, end: float | None, **extra: object) -> TraceStep:
    return TraceStep(
        seq=seq,
        key=f"t:{seq}",
        kind=kind,
        name=f"{kind}{seq}",
        status="completed" if end is not None else "pending",
        started_at=_at(start),
        finished_at=_at(end) if end is not None else None,
        duration_ms=(end - start) if end is not None else None,
        **extra,  # type: ignore[arg-type]
    )


def _trace(task_id: str, steps: list[TraceStep], start: float, end: float) -> TaskTrace:
    return TaskTrace(
        task_id=task_id, agent="a", user_id="u", tenant="t", status="completed",
        started_at=_at(start), finished_at=_at(end), duration_ms=end - start,
        steps=steps, compensations=[], budget=[],
    )  # fmt: skip


def test_bars_sit_where_their_steps_ran_and_children_follow_their_delegate() -> None:
    child = _trace("child", [_step(1, "tool", 40, 60)], 30, 70)
    parent = _trace(
        "parent",
        [
            _step(1, "llm", 0, 0, input_tokens=5, output_tokens=2),
            _step(2, "delegate", 20, 80, child=child),
            _step(
                3,
                "tool",
                80,
                100,
                decisions=[Decision(verdict="denied", rule="scopes", reason="no")],
            ),
        ],
        0,
        100,
    )
    bars = waterfall(parent)
    order = [("parent", 0, 1), ("parent", 0, 2), ("child", 1, 1), ("parent", 0, 3)]
    assert [(b.task_id, b.depth, b.seq) for b in bars] == order
    llm, delegate, tool, last = bars
    assert (llm.offset_pct, llm.width_pct) == (0.0, MIN_WIDTH_PCT), "instant steps stay visible"
    assert llm.tokens == "5/2"
    assert (delegate.offset_pct, delegate.width_pct) == (20.0, 60.0)
    assert (tool.offset_pct, tool.width_pct) == (40.0, 20.0), "a child is on the parent's axis"
    assert (last.offset_pct, last.width_pct) == (80.0, 20.0)
    assert last.decisions == "denied (scopes)"


def test_a_step_still_running_reaches_the_end_of_the_axis() -> None:
    running = _trace("t", [_step(1, "tool", 50, None)], 0, 100)
    (bar,) = waterfall(running)
    assert bar.offset_pct == 50.0
    assert bar.width_pct == 50.0, "clipped at the end of the axis"
    assert bar.duration_ms is None
