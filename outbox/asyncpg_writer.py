"""Group commit's writer on PostgreSQL: shared transactions through asyncpg alone.

Imported only where a database is PostgreSQL: asyncpg and SQLAlchemy's asyncpg
dialect add about 3 MB to a process that never uses them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.util import greenlet_spawn

from outbox.asyncpg_one_statement import fits_one_statement, write_in_one_statement
from outbox.asyncpg_statements import AsyncpgStatements
from outbox.staged_writes import StagedWrites, Written, write_staged

log = structlog.get_logger("ballast.group_commit")

_CONNECTION_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection the server ended, not yet noticed
    OSError,
    TimeoutError,
)


_SESSION = {"enable_seqscan": "off", "application_name": "ballast group commit"}
"""Every statement of the writer finds its rows by primary key; make PostgreSQL's
planner use those keys whatever it believes of the tables' sizes.

Left to its estimates, it scanned whole tables: asyncpg prepares each statement once
per connection, and PostgreSQL keeps one generic plan made while the inbox was new and
nearly empty (a scan of the whole table and a hash join), so every admission's inbox
read scanned the whole inbox as it grew (seen on a fresh database: idx_scan 2,
seq_scan 590 over 28,000 calls); and the end of claims, a table of a few live rows
and, until autovacuum comes by, a row left dead by every call, was a scan of all of
them (1.2 ms with 30,000 dead rows, 0.18 ms through the key). With sequential scans
priced out, both go through the primary key from the first plan on; a statement with
no usable index still scans (the setting prices scans, it does not forbid them).
The name shows the connection in ``pg_stat_activity``.
"""


def asyncpg_dsn(url: URL) -> str:
    """The DSN asyncpg takes for a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


_UNSYNCED = {
    **_SESSION,
    "synchronous_commit": "off",
    "application_name": "ballast group commit, unsynced",
}
"""The session of the writer's second connection, for writes none of which must reach
the disk before they count (`StagedWrites.must_reach_disk`: claims alone, deferred
writes): its commits return without waiting for the log's flush, about a fifth of a
millisecond each here. PostgreSQL writes one log, in order, so the next commit of the
other connection flushes these with it; a crash loses at most the latest of them."""


async def writer_connection(dsn: str, *, synced: bool = True) -> asyncpg.Connection:
    """A new connection to ``dsn`` as the writer opens its own (see `_SESSION`, `_UNSYNCED`)."""
    return await asyncpg.connect(dsn, server_settings=_SESSION if synced else _UNSYNCED)


class _Connection:
    """One of the writer's connections: opened when first needed, again after a failure."""

    def __init__(self, dsn: str, *, synced: bool) -> None:
        self._dsn = dsn
        self._synced = synced
        self._connection: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await writer_connection(self._dsn, synced=self._synced)
        return self._connection

    async def dispose(self) -> None:
        """Close the connection (at once if the server no longer answers)."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=2)
            except _CONNECTION_ERRORS:
                connection.terminate()


class AsyncpgWriter:
    """Transactions on PostgreSQL connections of the writer's own, through asyncpg alone.

    Group commit runs one transaction at a time, so one connection serves it, and a
    second one with unsynced commits (`_UNSYNCED`) serves the writes that need none. A
    connection that failed is dropped and the next transaction opens a new one. Errors
    come out as SQLAlchemy's, as from the rest of the outbox: a row that clashes as
    ``IntegrityError`` (group commit then writes each unit on its own), anything else as
    ``OperationalError``.
    """

    def __init__(self, url: URL) -> None:
        dsn = asyncpg_dsn(url)
        self._synced = _Connection(dsn, synced=True)
        self._unsynced = _Connection(dsn, synced=False)

    async def __call__(self, units: Sequence[StagedWrites]) -> Written:
        try:
            return await self._write(units)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise sa_exc.IntegrityError("shared transaction", None, exc) from exc
        except _CONNECTION_ERRORS as exc:
            await self.dispose()
            raise sa_exc.OperationalError("shared transaction", None, exc) from exc

    async def _write(self, units: Sequence[StagedWrites]) -> Written:
        syncs = any(unit.must_reach_disk for unit in units)
        connection = await (self._synced if syncs else self._unsynced).get()
        if all(unit.admission_only for unit in units):
            # Each statement commits on its own: admission needs no transaction around
            # its claims and its read of the inbox (`outbox.admission`), and a claim
            # left by a failure after it is released by the delivery's failure path
            # or lapses. BEGIN and COMMIT would be two more round trips.
            return await _statements(connection, units)
        ahead = [unit for unit in units if unit.deferred_single_update]
        rest = [unit for unit in units if not unit.deferred_single_update]
        if fits_one_statement(rest):
            if not rest:
                await self._alongside(ahead)
                return Written([], [])
            alongside = asyncio.create_task(self._alongside(ahead)) if ahead else None
            try:
                return await write_in_one_statement(connection, rest)
            except asyncpg.IntegrityConstraintViolationError:
                units = rest  # nothing of it was written; the statements tell which row clashed
            finally:
                if alongside is not None:
                    await alongside
        async with connection.transaction():
            return await _statements(connection, units)

    async def _alongside(self, ahead: Sequence[StagedWrites]) -> None:
        """Write deferred outcomes of steps (the previous step's, mostly, riding along with
        an agent's next request) on the unsynced connection, each update a statement that
        commits on its own, while the one statement runs on the other connection.

        Not part of the one statement: a part of it would not see a row another part
        inserts. Not before it either: that was a round trip more on every step's path
        (an agent's request took 0.8 instead of 0.6 ms at low load). So the two commit
        in either order, and a crash of the server may keep the next step and lose this
        outcome; nobody waits for it, and the resumed task takes the result again from
        its stream or the tool's inbox (`services.agent_context`). A failure here is the
        deferred writes' own (logged, the connection replaced), not the others'.
        """
        try:
            await _statements(await self._unsynced.get(), ahead)
        except _CONNECTION_ERRORS as exc:
            await self._unsynced.dispose()
            log.warning("group_commit.outcomes_not_written", units=len(ahead), error=str(exc))

    async def dispose(self) -> None:
        """Close both connections."""
        await self._synced.dispose()
        await self._unsynced.dispose()


async def _statements(connection: asyncpg.Connection, units: Sequence[StagedWrites]) -> Written:
    """``units`` written statement by statement, in the transaction open on ``connection``
    (or none: then each statement commits on its own)."""
    written: Written = await greenlet_spawn(write_staged, AsyncpgStatements(connection), units)
    return written
