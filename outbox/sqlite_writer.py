"""Group commit's shared transactions on SQLite: one thread and one connection of their own
(why: `outbox.writers`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from outbox.sqlite3_statements import Sqlite3Statements
from outbox.staged_writes import StagedWrites, Written, write_staged


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
        try:
            with self._engine.begin() as conn:
                connection = conn.connection.driver_connection
                assert isinstance(connection, sqlite3.Connection)
                return write_staged(Sqlite3Statements(connection), units)
        except sqlite3.IntegrityError as exc:  # a row of one unit clashes: as SQLAlchemy says it
            raise sa_exc.IntegrityError("shared transaction", None, exc) from exc
        except sqlite3.Error as exc:
            raise sa_exc.OperationalError("shared transaction", None, exc) from exc

    async def dispose(self) -> None:
        """Close the connection in the thread that opened it, then end the thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        await asyncio.to_thread(self._thread.shutdown)
