"""Where a shared transaction of group commit runs: one call per transaction.

Through SQLAlchemy's async engine every statement is several awaits: on SQLite
each is a hop to aiosqlite's thread and back (creating a cursor, executing,
fetching, closing), about 0.4 ms apiece on this kind of machine, so a
transaction of five statements cost 3-5 ms although SQLite needs 0.5 ms for it.
So on SQLite the whole transaction runs in one hop, on a thread and a
connection of its own, through SQLAlchemy's synchronous engine over the
standard library's sqlite3. On PostgreSQL the statements are network round
trips anyway; they run through asyncpg alone, on a connection of the writer's own
(`outbox.asyncpg_writer`: SQLAlchemy's layers around the driver cost more than the
round trips).

Either way `outbox.staged_writes.write_staged` decides what is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy.engine import Engine

from outbox.sqlalchemy_statements import write
from outbox.staged_writes import StagedWrites, Written


class Writer(Protocol):
    """Runs one shared transaction of staged writes and commits it."""

    async def __call__(self, units: Sequence[StagedWrites]) -> Written: ...

    async def dispose(self) -> None: ...


class SqliteThreadWriter:
    """A transaction on a SQLite connection of its own, run by a thread of its own.

    ``engine`` is a synchronous engine of one connection, configured as the async
    engine's (`outbox.database`: WAL, synchronous=FULL, BEGIN IMMEDIATE). While the
    thread runs SQLite's C code it releases the GIL, so the event loop goes on.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ballast-sqlite-writer")

    async def __call__(self, units: Sequence[StagedWrites]) -> Written:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, units)

    def _write(self, units: Sequence[StagedWrites]) -> Written:
        with self._engine.begin() as conn:
            return write(conn, units, is_sqlite=True)

    async def dispose(self) -> None:
        """Close the connection in the thread that opened it, then end the thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        await asyncio.to_thread(self._thread.shutdown)
