"""An INSERT that can say what to do ON CONFLICT, in the dialect of the database at hand.

SQLite and PostgreSQL each have their own insert construct for upserts. A process runs
on one of them, and SQLAlchemy's PostgreSQL dialect alone weighs about 2.3 MB of memory
(its drivers' dialects come with it), so a dialect is imported only once a statement
for its database is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Table

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert


def conflict_insert(table: Table, *, is_sqlite: bool) -> SqliteInsert | PostgresInsert:
    """``INSERT INTO table`` for SQLite or PostgreSQL, ready for ``on_conflict_do_*``."""
    if is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    from sqlalchemy.dialects.postgresql import insert as postgres_insert

    return postgres_insert(table)
