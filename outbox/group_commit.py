"""Group commit: the units of work of one process that commit together share a transaction.

A commit costs about as much for fifty units as for one, and so does each
statement. So while one shared transaction is being written, the units that
commit meanwhile gather; the next transaction writes all of them (at most
``max_units``), one multi-row statement per table. A unit that commits alone is
written at once: nothing waits for company, so the latency at low load is that
of a plain commit. ``window_s`` can add a short wait to gather more.

Every unit still gets its own outcome. If the shared transaction fails because
of one unit (its input was processed by another delivery meanwhile, or another
row of it clashes with one already there), each unit of it is written again in
a transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import exc as sa_exc

from outbox.errors import AlreadyProcessedError, DatabaseError
from outbox.staged_writes import StagedWrites, Written
from outbox.writers import Writer

log = structlog.get_logger("ballast.group_commit")


@dataclass(frozen=True, slots=True)
class GroupCommitConfig:
    """How many units one transaction may carry, and how long to wait for more."""

    max_units: int = 256
    window_s: float = 0.0
    deferred_s: float = 0.2
    """Longest wait of deferred writes (`GroupCommit.defer`) for a transaction to join."""


@dataclass(slots=True)
class _Waiting:
    writes: StagedWrites
    done: asyncio.Future[Written]


class GroupCommit:
    """Commits staged writes, many units per transaction. One per database."""

    def __init__(
        self,
        transaction: Writer,
        describe: Callable[[], str],
        config: GroupCommitConfig | None = None,
    ) -> None:
        self._transaction = transaction
        self._describe = describe
        self._config = config or GroupCommitConfig()
        self._queue: list[_Waiting] = []
        self._deferred: list[_Waiting] = []
        self._unordered: list[_Waiting] = []
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._deferred_due = False
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
        self._start_writer()
        # The writer, a task of its own, finishes the transaction even if this waiter is
        # cancelled (which cancels ``done``; the writer settles only futures not done):
        # other units depend on it, and the outcome is what the database says. No shield
        # around ``done``: it would cost a turn of the loop at every commit.
        return await done

    def defer(self, writes: StagedWrites, *, ordered: bool = True) -> None:
        """Write ``writes`` with the next transaction, or alone after ``deferred_s``.

        For bookkeeping nobody waits for (the outcome of a step an inbox can answer
        again): it rides along with the transactions that others wait for instead of
        delaying them, written by the time any unit committed after it here is (on
        PostgreSQL alongside it: `outbox.asyncpg_writer`).

        ``ordered=False`` is for writes nothing reads in order (the relay marking rows
        sent): they wait for ``deferred_s`` and go together, so that they do not add a
        statement to every transaction on a step's path. ``max_units`` of them go at
        once. A failure is logged; the caller must be able to live with it.
        """
        writes.deferred = True
        done: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_log_failure)
        (self._deferred if ordered else self._unordered).append(_Waiting(writes, done))
        if len(self._unordered) >= self._config.max_units:
            self._deferred_expired()
        elif self._deferred_timer is None:
            self._deferred_timer = asyncio.get_running_loop().call_later(
                self._config.deferred_s, self._deferred_expired
            )

    async def flush(self, timeout_s: float) -> bool:
        """Write the deferred writes now; wait at most ``timeout_s`` for them to be written.

        Returns whether they were. Bounded because its callers are on their way out
        (closing the database): a deferred write left unwritten only leaves rows unsent
        (the relay's sweep publishes them again) or a step pending (a resumed task
        asks again and the inbox that answered answers the same).
        """
        pending = [w.done for w in (*self._deferred, *self._unordered)]
        self._deferred_expired()
        if not pending:
            return True
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        return not late

    def _deferred_expired(self) -> None:
        if self._deferred_timer is not None:  # called before its time: the timer is done
            self._deferred_timer.cancel()
            self._deferred_timer = None
        self._deferred_due = True
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
            self._writer.add_done_callback(self._writer_ended)

    def _writer_ended(self, writer: asyncio.Task[None]) -> None:
        """A writer cancelled before or between its transactions (the loop is closing)
        leaves units behind: nobody may wait for them forever."""
        if not writer.cancelled():
            return
        left, self._queue = [*self._queue, *self._take_deferred(due=True)], []
        for waiting in left:
            _settle(waiting, DatabaseError("the commit was cancelled; its outcome is unknown"))

    async def _write_all(self) -> None:
        while self._queue or self._deferred_due:
            due, self._deferred_due = self._deferred_due, False
            if self._config.window_s > 0 and len(self._queue) < self._config.max_units:
                await asyncio.sleep(self._config.window_s)
            batch = [*self._take_deferred(due), *self._queue[: self._config.max_units]]
            del self._queue[: self._config.max_units]
            if batch:
                await self._write_batch(batch)

    def _take_deferred(self, due: bool) -> list[_Waiting]:
        """The ordered deferred writes, and the unordered ones once ``due``."""
        taken, self._deferred = self._deferred, []
        if due:
            taken += self._unordered
            self._unordered = []
        if self._deferred_timer is not None and not self._unordered:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        return taken

    async def _write_batch(self, batch: Sequence[_Waiting]) -> None:
        try:
            written = await self._transaction([w.writes for w in batch])
        except (AlreadyProcessedError, sa_exc.IntegrityError) as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            for waiting in batch:  # a row of one unit clashed: find whose, each on its own
                await self._write_batch([waiting])
            return
        except Exception as exc:  # every waiter learns what happened to its unit
            for waiting in batch:
                _settle(waiting, self._error(exc))
            return
        except BaseException:  # cancelled (the loop is closing): nobody may wait forever
            for waiting in batch:
                _settle(waiting, DatabaseError("the commit was cancelled; its outcome is unknown"))
            raise
        self.transactions += 1
        self.units += len(batch)
        rows, admissions = iter(written.committed), iter(written.admissions)
        for waiting in batch:
            mine = Written(
                [next(rows) for _ in waiting.writes.outbox],
                [next(admissions) for _ in waiting.writes.claims],
            )
            _settle(waiting, mine)

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sa_exc.SQLAlchemyError | OSError):
            return DatabaseError(f"commit failed on {self._describe()}: {exc}")
        return exc


def _log_failure(done: asyncio.Future[Written]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("group_commit.deferred_failed", error=str(done.exception()))


def _settle(waiting: _Waiting, outcome: Written | BaseException) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
