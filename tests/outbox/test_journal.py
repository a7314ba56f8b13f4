"""The journal: what `record_step` hands back is what it wrote."""

from __future__ import annotations

from outbox import Database, UnitOfWork
from outbox.journal import StepStatus, load_journal, record_step


async def test_the_entry_recorded_equals_the_row_loaded_and_takes_an_outcome(
    db: Database,
) -> None:
    """The agent keeps the entry `record_step` returns as its journal in memory, and later
    sets its outcome on it: it must hold the same values as the row read back."""
    async with UnitOfWork(db) as uow:
        pending = record_step(
            uow, task_id="t", seq=1, kind="tool", name="lookup",
            request={"args": {"q": "é"}}, status=StepStatus.PENDING,
        )  # fmt: skip
        done = record_step(
            uow, task_id="t", seq=2, kind="model", name="m", request=None,
            status=StepStatus.COMPLETED, outcome={"value": [1, 2]}, usage={"tokens": 3},
        )  # fmt: skip
    loaded = await load_journal(db, "t")
    assert pending.model_dump() == loaded[1].model_dump()
    assert done.model_dump() == loaded[2].model_dump()
    assert pending.finished_at is None
    assert done.finished_at is not None
    pending.status = StepStatus.COMPLETED.value
    pending.outcome = {"value": 1}
    assert (pending.status, pending.outcome, pending.seq) == ("completed", {"value": 1}, 1)
