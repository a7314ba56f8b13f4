"""Where a shared transaction of group commit runs: one call per transaction.

Through SQLAlchemy's async engine every statement is several awaits: on SQLite
each is a hop to aiosqlite's thread and back (creating a cursor, executing,
fetching, closing), about 0.4 ms apiece on this kind of machine, so a
transaction of five statements cost 3-5 ms although SQLite needs 0.5 ms for it.
So on SQLite the whole transaction runs in one hop, on a thread and a
connection of its own, through SQLAlchemy's synchronous engine over the
standard library's sqlite3. On PostgreSQL the statements are network round
trips anyway; they run through asyncpg alone, on a connection of the writer's own
(`outbox.asyncpg_statements`: SQLAlchemy's layers around the driver cost more than
the round trips).

Either way `outbox.staged_writes.write_staged` decides what is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.util import greenlet_spawn

from outbox.asyncpg_statements import AsyncpgStatements
from outbox.sqlalchemy_statements import write
from outbox.staged_writes import StagedWrites, Written, write_staged


class Writer(Protocol):
    """Runs one shared transaction of staged writes and commits it."""

    async def __call__(self, units: Sequence[StagedWrites]) -> Written: ...

    async def dispose(self) -> None: ...


class AsyncpgWriter:
    """Transactions on a PostgreSQL connection of the writer's own, through asyncpg alone.

    Group commit runs one transaction at a time, so one connection serves it. A
    connection that failed is dropped and the next transaction opens a new one. Errors
    come out as SQLAlchemy's, as from the rest of the outbox: a row that clashes as
    ``IntegrityError`` (group commit then writes each unit on its own), anything else as
    ``OperationalError``.
    """

    def __init__(self, url: URL) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: asyncpg.Connection | None = None

    async def __call__(self, units: Sequence[StagedWrites]) -> Written:
        try:
            connection = await self._connect()
            async with connection.transaction():
                written: Written = await greenlet_spawn(
                    write_staged, AsyncpgStatements(connection), units
                )
                return written
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise sa_exc.IntegrityError("shared transaction", None, exc) from exc
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # a connection the server ended, not yet noticed
            OSError,
            TimeoutError,
        ) as exc:
            await self.dispose()
            raise sa_exc.OperationalError("shared transaction", None, exc) from exc

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self._dsn)
        return self._connection

    async def dispose(self) -> None:
        """Close the connection (at once if the server no longer answers)."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=2)
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                OSError,
                TimeoutError,
            ):
                connection.terminate()


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
