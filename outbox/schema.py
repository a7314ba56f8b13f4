"""The version of Ballast's tables in a database, and moving it forward (Alembic).

Services check the version when they start and refuse an outdated schema, so a
deployment never runs new code on old tables (or old code on new ones); ``ballast
db upgrade`` applies the migrations. A database created before migrations
existed (its tables made by ``create_all``) holds exactly the first revision's
schema, so it is stamped at that revision and upgraded from there.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from outbox.database import Database
from outbox.errors import DatabaseError, SchemaOutdatedError

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "ballast_alembic_version"
FIRST_REVISION = "0001"
_SENTINEL_TABLE = "ballast_outbox"
_REVISION = re.compile(r'^(down_)?revision = (?:"(\w+)"|None)$', re.MULTILINE)

if TYPE_CHECKING:
    from alembic.config import Config


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configured for Ballast's migrations, running on ``connection``."""
    from alembic.config import Config  # Alembic only when migrating

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The revision this code needs: the one no migration builds on.

    Read from the migration files' ``revision`` lines, not through Alembic: every
    service checks it at start, and Alembic costs a service about 9 MB of memory.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for down, revision in _REVISION.findall(path.read_text()):
            if revision:
                (parents if down else revisions).add(revision)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations must have one head, found {sorted(heads)}")
    return heads.pop()


def _current(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revision: str | None = connection.execute(
        text("SELECT version_num FROM " + VERSION_TABLE)
    ).scalar()
    return revision


def _upgrade(connection: Connection) -> None:
    from alembic import command  # Alembic only when migrating

    if _current(connection) is None and inspect(connection).has_table(_SENTINEL_TABLE):
        command.stamp(alembic_config(connection), FIRST_REVISION)
    command.upgrade(alembic_config(connection), "head")


async def _run(db: Database, what: str, fn: Any, *, lock: bool = False) -> Any:
    """``fn(connection)`` in one transaction, its errors as `DatabaseError`."""
    try:
        async with db.engine.begin() as conn:
            if lock:
                await db.lock_schema(conn)
            return await conn.run_sync(fn)
    except (OSError, sa_exc.SQLAlchemyError) as exc:
        raise DatabaseError(f"{what} of {db.safe_url} failed: {exc}") from exc


async def current_revision(db: Database) -> str | None:
    """The revision of Ballast's tables in ``db``; None if they were never migrated."""
    revision: str | None = await _run(db, "reading the schema version", _current)
    return revision


async def upgrade(db: Database) -> str:
    """Apply every migration ``db`` lacks; return the revision it is at now.

    Safe when several processes start at once: they take turns (`Database.lock_schema`).
    """
    if await current_revision(db) != head_revision():
        await _run(db, "migrating", _upgrade, lock=True)
    return head_revision()


async def migrate(url: str) -> str:
    """`upgrade` the database at ``url`` with an engine of its own, as 'ballast db upgrade'."""
    db = Database(url)
    try:
        return await upgrade(db)
    finally:
        await db.dispose()


async def check_schema(db: Database) -> None:
    """Raise `SchemaOutdatedError` unless ``db`` is at the revision this code needs."""
    current, head = await current_revision(db), head_revision()
    if current == head:
        return
    found = f"at revision {current}" if current else "not migrated"
    raise SchemaOutdatedError(
        f"the Ballast tables in {db.safe_url} are {found}, this code needs {head}: "
        "run 'ballast db upgrade' (with the same BALLAST_DATABASE_URL) before starting services"
    )
