"""Alembic environment: runs on the connection `outbox.schema` hands it.

Only Ballast's tables (``ballast_*``) are managed here; an application's own
tables belong to the application's migrations. The version is kept in
``ballast_alembic_version`` so that it never collides with the application's.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

from outbox import tables as _tables  # noqa: F401 - registers the tables

VERSION_TABLE = "ballast_alembic_version"


FULL_TEXT = ("ballast_chunk_fts", "ix_ballast_chunk_search", "search")
"""The full-text index of the chunks: made by raw SQL per dialect, not by the models."""


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if name and name.startswith(FULL_TEXT) and compare_to is None:
        return False
    return type_ != "table" or bool(name and name.startswith("ballast_"))


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        version_table=VERSION_TABLE,
        include_object=_ours,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run Ballast's migrations with 'ballast db upgrade'")
_run(connection)
