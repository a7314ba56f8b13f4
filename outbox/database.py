"""The database a service keeps its outbox, inbox and own data in: SQLite or PostgreSQL.

SQLite is the zero-setup default. It allows one writer at a time, so a
service's engine holds a single connection (sessions queue for it in order,
instead of polling a file lock) and every transaction starts with
``BEGIN IMMEDIATE`` so that a second process on the same file waits instead of
failing half-way with "database is locked". Group commit writes through a
second connection of its own (`outbox.writers`); the two take turns the same
way. PostgreSQL gets a normal pool.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import SQLModel

# Importing the tables registers them in SQLModel's metadata.
from outbox import tables as _tables  # noqa: F401
from outbox.errors import DatabaseError
from outbox.group_commit import GroupCommit, GroupCommitConfig
from outbox.staged_writes import Committed
from outbox.writers import Writer

SCHEMA_LOCK = 0x62616C6C  # "ball": the advisory lock that serializes schema changes
SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite transaction waits for another process's write lock."""
_SQLITE_POOL: dict[str, Any] = {
    "pool_size": 1,
    "max_overflow": 0,
    "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S},
}
"""One connection per engine: its transactions queue in order instead of polling a lock."""
FLUSH_TIMEOUT_S = 5.0
"""Longest wait for deferred writes (rows to mark sent, step outcomes) when the database closes."""

log = structlog.get_logger("ballast.database")


def sqlite_url(path: Path) -> str:
    """The async SQLAlchemy URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


class Database:
    """An async engine plus the hooks that run after each commit.

    Commit hooks hand the relay of the same process the outbox rows that just
    committed, so it publishes them at once instead of looking for them.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        producer: str | None = None,
        pool_size: int = 20,
        echo: bool = False,
        group_commit: GroupCommitConfig | None = None,
    ) -> None:
        self.url = make_url(url)
        self.producer = producer
        """Whose relay publishes the outbox rows written here: services sharing one
        database each relay their own rows (their NATS user may publish only those);
        None writes rows any relay may publish, and relays every row."""
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine: AsyncEngine = _create_engine(self.url, pool_size=pool_size, echo=echo)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer = self._make_writer()
        self.group = GroupCommit(self._writer, lambda: self.safe_url, group_commit)
        """Commits the staged writes of concurrent units of work together."""
        self._commit_hooks: list[Callable[[list[Committed]], None]] = []

    def _make_writer(self) -> Writer:
        # Each imported only here: the other database's driver and dialect weigh
        # about 3 MB (asyncpg and SQLAlchemy's PostgreSQL dialect) in a process.
        if not self.is_sqlite:
            from outbox.asyncpg_writer import AsyncpgWriter

            return AsyncpgWriter(self.url)
        from outbox.sqlite_writer import SqliteWriter

        return SqliteWriter(
            self.url.database or ":memory:",
            busy_timeout_s=SQLITE_BUSY_TIMEOUT_S,
            configure=configure_sqlite_connection,
        )

    def on_commit(self, hook: Callable[[list[Committed]], None]) -> None:
        """Call ``hook`` with the outbox rows of every unit of work that committed some."""
        self._commit_hooks.append(hook)

    def notify_committed(self, rows: list[Committed]) -> None:
        """Run the commit hooks (called by `UnitOfWork`)."""
        for hook in self._commit_hooks:
            hook(rows)

    async def create_app_tables(self) -> None:
        """Create the application's own SQLModel tables if missing.

        Ballast's tables (``ballast_*``) are left to the migrations (`outbox.schema`).
        """
        apps = [
            t for name, t in SQLModel.metadata.tables.items() if not name.startswith("ballast_")
        ]
        try:
            async with self.engine.begin() as conn:
                await self.lock_schema(conn)
                await conn.run_sync(lambda c: SQLModel.metadata.create_all(c, tables=apps))
        except OSError as exc:  # pragma: no cover - depends on the environment
            raise DatabaseError(f"cannot reach the database at {self.safe_url}: {exc}") from exc

    async def lock_schema(self, conn: AsyncConnection) -> None:
        """Serialize schema changes of processes starting together (PostgreSQL; SQLite has
        one writer anyway): concurrent CREATE TABLE IF NOT EXISTS can fail there."""
        if not self.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises `DatabaseError` when the database does not answer."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, sa_exc.SQLAlchemyError) as exc:
            raise DatabaseError(f"the database at {self.safe_url} does not answer: {exc}") from exc

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    def session(self) -> AsyncSession:
        """A new session; prefer `UnitOfWork`, which also writes outbox rows."""
        return self.sessions()

    async def dispose(self) -> None:
        """Write what waits in the group commit (for at most a few seconds), then close
        every pooled connection."""
        if not await self.group.flush(FLUSH_TIMEOUT_S):
            log.warning("database.deferred_writes_left", timeout_s=FLUSH_TIMEOUT_S)
        await self._writer.dispose()
        await self.engine.dispose()


def _create_engine(url: URL, *, pool_size: int, echo: bool) -> AsyncEngine:
    if url.get_backend_name() != "sqlite":
        # A fixed pool: sessions queue for a connection instead of opening overflow
        # connections that are closed again at once (connection churn cost more than
        # the work). No pre-ping on each checkout: a dead connection fails the
        # transaction, and the message is retried like any other database failure.
        return create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=0, pool_recycle=1800
        )
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo, **_SQLITE_POOL)
    _configure_sqlite_engine(engine.sync_engine)
    return engine


def _configure_sqlite_engine(engine: Engine) -> None:
    """Every connection of ``engine`` set up as below, every transaction BEGIN IMMEDIATE."""
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_immediate)


def _configure_sqlite(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    configure_sqlite_connection(dbapi_connection)


def configure_sqlite_connection(connection: Any) -> None:
    """Set up a SQLite connection (sqlite3's, or aiosqlite's proxy of one) as Ballast needs."""
    # Transactions are begun explicitly, not by the driver: BEGIN IMMEDIATE takes the write
    # lock at once (_begin_immediate; the group commit writer, outbox.sqlite_writer).
    connection.isolation_level = None
    cursor = connection.cursor()
    # WAL lets readers work during a write; synchronous=FULL makes a commit durable
    # on power loss, which an outbox promises.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
