"""Group commit: the units of work of one process that commit together share a transaction.

A commit costs about as much for fifty units as for one, and so does each
statement. So while one shared transaction is being written, the units that
commit meanwhile gather; the next transaction writes all of them (at most
``max_units``), one multi-row statement per table. A unit that commits alone is
written at once: nothing waits for company, so the latency at low load is that
of a plain commit. ``window_s`` can add a short wait to gather more.

Every unit still gets its own outcome. If the shared transaction fails because
of one unit (its input was processed by another delivery meanwhile), each unit
of it is written again in a transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.errors import AlreadyProcessedError, DatabaseError
from outbox.staged_writes import StagedWrites, Written, write


@dataclass(frozen=True, slots=True)
class GroupCommitConfig:
    """How many units one transaction may carry, and how long to wait for more."""

    max_units: int = 256
    window_s: float = 0.0


@dataclass(slots=True)
class _Waiting:
    writes: StagedWrites
    done: asyncio.Future[Written]


class GroupCommit:
    """Commits staged writes, many units per transaction. One per engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        describe: Callable[[], str],
        config: GroupCommitConfig | None = None,
    ) -> None:
        self._engine = engine
        self._describe = describe
        self._config = config or GroupCommitConfig()
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0
        """Shared transactions committed so far (with `units`, the batching achieved)."""
        self.units = 0

    async def commit(self, writes: StagedWrites) -> Written:
        """Commit ``writes`` (in a transaction shared with others); return what it decided.

        Raises `AlreadyProcessedError` or `DatabaseError` for this unit only.
        """
        done: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(writes, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        # The writer finishes the transaction even if this waiter is cancelled: other
        # units depend on it, and the outcome is what the database says.
        return await asyncio.shield(done)

    async def _write_all(self) -> None:
        while self._queue:
            if self._config.window_s > 0 and len(self._queue) < self._config.max_units:
                await asyncio.sleep(self._config.window_s)
            batch = self._queue[: self._config.max_units]
            del self._queue[: len(batch)]
            await self._write_batch(batch)

    async def _write_batch(self, batch: Sequence[_Waiting]) -> None:
        try:
            written = await self._transaction([w.writes for w in batch])
        except AlreadyProcessedError as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            for waiting in batch:  # find out whose input it was: each on its own
                await self._write_batch([waiting])
            return
        except Exception as exc:  # every waiter learns what happened to its unit
            for waiting in batch:
                _settle(waiting, self._error(exc))
            return
        self.transactions += 1
        self.units += len(batch)
        rows, admissions = iter(written.committed), iter(written.admissions)
        for waiting in batch:
            mine = Written(
                [next(rows) for _ in waiting.writes.outbox],
                [next(admissions) for _ in waiting.writes.claims],
            )
            _settle(waiting, mine)

    async def _transaction(self, units: Sequence[StagedWrites]) -> Written:
        async with self._engine.begin() as conn:
            return await write(conn, units, is_sqlite=self._engine.dialect.name == "sqlite")

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sa_exc.SQLAlchemyError | OSError):
            return DatabaseError(f"commit failed on {self._describe()}: {exc}")
        return exc


def _settle(waiting: _Waiting, outcome: Written | BaseException) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
