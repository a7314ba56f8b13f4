"""Where a shared transaction of group commit runs: one call per transaction.

Through SQLAlchemy's async engine every statement is several awaits: on SQLite
each is a hop to aiosqlite's thread and back (creating a cursor, executing,
fetching, closing), about 0.4 ms apiece on this kind of machine, so a
transaction of five statements cost 3-5 ms although SQLite needs 0.5 ms for it.
So on SQLite the whole transaction is one call on a sqlite3 connection of its own,
on the event loop's thread or a thread of its own (`outbox.sqlite_writer`,
`outbox.sqlite3_statements`). On PostgreSQL the
statements are network round trips anyway; they run through asyncpg alone, on a
connection of the writer's own (`outbox.asyncpg_writer`: SQLAlchemy's layers around
the driver cost more than the round trips).

Either way `outbox.staged_writes.write_staged` decides what is written. Each writer
is imported only by a process on its database (`outbox.database`): the other
database's driver and SQLAlchemy dialect would cost memory for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from outbox.staged_writes import StagedWrites, Written


class Writer(Protocol):
    """Runs one shared transaction of staged writes and commits it."""

    async def __call__(self, units: Sequence[StagedWrites]) -> Written: ...

    async def dispose(self) -> None: ...
