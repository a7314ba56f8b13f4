"""Group commit's shared transactions on SQLite, on a sqlite3 connection of their own
(why: `outbox.writers`).

Each transaction is BEGIN IMMEDIATE, the statements (`outbox.sqlite3_statements`) and
COMMIT, straight on the connection: through SQLAlchemy's engine, beginning and
committing cost about 0.3 ms more per transaction.

Where it runs depends on SQLite's write lock:

- **Free at once (nearly always): on the event loop's thread, at once.** On a thread
  of its own, a transaction waited for the interpreter lock, which the loop's thread
  holds for its own work: waking the thread took 1.8 ms (median, under load) and a
  transaction of about 40 units 4-5 ms, of which the thread spent 2-3 ms on the CPU.
  The loop meanwhile sat idle a fifth of the time, every call in flight waiting for
  its commit. On the loop's thread a transaction takes only its own time; the loop
  stops for it, COMMIT's file sync included (once per transaction, however many units
  it carries), which costs less than the hand-offs did (bench/README.md, "What
  changed the figures").
- **Taken by another connection (a unit of work's own session, another process): on
  a thread of its own.** Waiting for that lock on the loop's thread would stop the very
  loop that must finish the transaction holding it.

A transaction none of whose units must reach the disk (claims alone, deferred writes
alone: `StagedWrites.must_reach_disk`) commits with synchronous=NORMAL, without the
file sync: in WAL mode SQLite then appends it to the log in order, and the next
transaction with synchronous=FULL syncs the log, these frames with it. A power loss
can lose only the latest of them, never one that a synced commit follows.

The connection is used by one transaction at a time (group commit writes one after the
other), from either thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import exc as sa_exc

from outbox.sqlite3_statements import Sqlite3Statements
from outbox.staged_writes import StagedWrites, Written, write_staged

WRITER_THREAD = "ballast-sqlite-writer"
"""The name (prefix) of the writer's thread, as thread dumps and profiles show it."""


class SqliteWriter:
    """Shared transactions on the SQLite file at ``path``.

    ``configure`` sets up the connection as the async engine's are (`outbox.database`:
    transactions begun explicitly, WAL, synchronous=FULL); ``busy_timeout_s`` is how
    long a transaction on the thread waits for another connection's write lock.
    """

    def __init__(
        self, path: str, *, busy_timeout_s: float, configure: Callable[[sqlite3.Connection], None]
    ) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._configure = configure
        self._connection: sqlite3.Connection | None = None
        self._syncs = True
        """Whether the connection's commits sync the file (synchronous=FULL, as configured)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD)

    async def __call__(self, units: Sequence[StagedWrites]) -> Written:
        loop = asyncio.get_running_loop()
        if self._connection is None:  # opened on the thread: it may wait for a lock
            self._connection = await loop.run_in_executor(self._thread, self._connect)
        connection = self._connection
        syncs = any(unit.must_reach_disk for unit in units)
        if syncs is not self._syncs:
            _set_synchronous(connection, "FULL" if syncs else "NORMAL")
            self._syncs = syncs
        if _begin_unless_locked(connection, self._busy_timeout_s):
            return _write(connection, units)
        return await loop.run_in_executor(self._thread, _begin_and_write, connection, units)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, check_same_thread=False
            )
            self._configure(connection)
        except sqlite3.Error as exc:
            raise sa_exc.OperationalError("shared transaction", None, exc) from exc
        return connection

    async def dispose(self) -> None:
        """Close the connection, then end the thread."""
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._connection.close)
            self._connection = None
        await asyncio.to_thread(self._thread.shutdown)


def _set_synchronous(connection: sqlite3.Connection, level: str) -> None:
    """Set how commits sync; outside a transaction, where SQLite takes it."""
    try:
        connection.execute(f"PRAGMA synchronous={level}")
    except sqlite3.Error as exc:
        raise sa_exc.OperationalError("shared transaction", None, exc) from exc


def _begin_unless_locked(connection: sqlite3.Connection, busy_timeout_s: float) -> bool:
    """BEGIN IMMEDIATE if no other connection holds the write lock; never waits for it."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:  # locked (or failing: the thread's attempt says how)
        return False
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return True


def _begin_and_write(connection: sqlite3.Connection, units: Sequence[StagedWrites]) -> Written:
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise sa_exc.OperationalError("shared transaction", None, exc) from exc
    return _write(connection, units)


def _write(connection: sqlite3.Connection, units: Sequence[StagedWrites]) -> Written:
    """Write ``units`` in the transaction begun on ``connection`` and commit it.

    sqlite3's errors are raised as SQLAlchemy's, which group commit tells apart (a row
    of one unit that clashes, or the database failing).
    """
    statements = Sqlite3Statements(connection)
    try:
        written = write_staged(statements, units)
        connection.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        _rollback(connection)
        raise sa_exc.IntegrityError("shared transaction", None, exc) from exc
    except sqlite3.Error as exc:
        _rollback(connection)
        raise sa_exc.OperationalError("shared transaction", None, exc) from exc
    except BaseException:
        _rollback(connection)
        raise
    finally:
        statements.close()  # the error raised keeps them: see Sqlite3Statements.close
    return written


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the failure that got here is what counts
            connection.execute("ROLLBACK")
