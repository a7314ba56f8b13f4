"""Migrations: services refuse an outdated schema, 'ballast db upgrade' fixes it, and a
database created before migrations existed is adopted."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, make_url, text

from contracts import TaskRequest
from outbox import Database
from outbox.errors import SchemaOutdatedError
from outbox.schema import (
    FIRST_REVISION,
    alembic_config,
    check_schema,
    current_revision,
    head_revision,
    upgrade,
)
from services.agent_context import AgentContext
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.host import ServiceHost
from tests.helpers import modules_a_service_loads, settings_for
from tests.services.test_cli import ballast, cli_env


async def _indexes(db: Database, table: str) -> set[str]:
    async with db.engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_indexes(table))
    return {str(i["name"]) for i in found}


async def test_a_service_refuses_an_unmigrated_database_and_says_what_to_run(
    empty_database_url: str, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    db = Database(empty_database_url)
    try:
        with pytest.raises(SchemaOutdatedError, match="run 'ballast db upgrade'"):
            await check_schema(db)
    finally:
        await db.dispose()
    app = Ballast("x")

    @app.agent("noop_schema")
    async def noop(ctx: AgentContext, task: TaskRequest) -> None:
        return None

    settings = settings_for(nats_server.url, empty_database_url, tmp_path)
    assert not settings.migrates_itself, "with a configured database, migrating is explicit"
    host = ServiceHost(settings, app.specs, name="refuses")
    with pytest.raises(SchemaOutdatedError, match="not migrated, this code needs"):
        await host.start()


async def test_a_database_made_before_migrations_is_stamped_and_upgraded(
    empty_database_url: str,
) -> None:
    db = Database(empty_database_url)
    try:
        # What create_all made before migrations existed: the schema of revision 0001,
        # with no version table.
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), FIRST_REVISION))
            await conn.execute(text("DROP TABLE ballast_alembic_version"))
            await conn.execute(
                text(
                    "INSERT INTO ballast_inbox (consumer, key, processed_at) "
                    "VALUES ('c', 'kept', CURRENT_TIMESTAMP)"
                )
            )
        assert await current_revision(db) is None
        assert await upgrade(db) == head_revision()
        await check_schema(db)
        assert "ix_ballast_journal_seq_started" in await _indexes(db, "ballast_journal")
        async with db.engine.connect() as conn:
            kept = (await conn.execute(text("SELECT key FROM ballast_inbox"))).scalars().all()
        assert kept == ["kept"], "adopting a database keeps its rows"
        assert await upgrade(db) == head_revision(), "upgrading twice changes nothing"
    finally:
        await db.dispose()


def test_the_embedded_default_migrates_itself_and_a_configured_database_does_not(
    tmp_path: Path,
) -> None:
    embedded = settings_for("nats://127.0.0.1:1", "", tmp_path).model_copy(
        update={"database_url": None}
    )
    assert embedded.migrates_itself
    configured = settings_for("nats://127.0.0.1:1", "sqlite+aiosqlite:///x.db", tmp_path)
    assert not configured.migrates_itself
    forced = configured.model_copy(update={"auto_migrate": True})
    assert forced.migrates_itself


def test_ballast_db_upgrade_and_current_on_the_command_line(empty_database_url: str) -> None:
    env = cli_env(BALLAST_DATABASE_URL=empty_database_url)
    before = ballast("db", "current", env=env)
    assert before.returncode == 1
    assert "revision none" in before.stdout
    done = ballast("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert f"upgraded from nothing to revision {head_revision()}" in done.stdout
    after = ballast("db", "current", env=env)
    assert after.returncode == 0
    again = ballast("db", "upgrade", env=env)
    assert f"already at revision {head_revision()}" in again.stdout


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    """Services read the head from the migration files (no Alembic at start); it must agree."""
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_service_start_loads_neither_alembic_nor_the_other_databases_driver(
    database_url: str,
) -> None:
    """Checking or re-applying a current schema reads one row; Alembic stays unimported (about
    9 MB of every service's memory). Nor does a service load the driver and SQLAlchemy dialect
    of the database it does not run on (about 3 MB: asyncpg and the PostgreSQL dialect on
    SQLite)."""
    other = (
        ["asyncpg", "sqlalchemy.dialects.postgresql"]
        if make_url(database_url).get_backend_name() == "sqlite"
        else ["aiosqlite", "sqlalchemy.dialects.sqlite"]
    )
    assert not {"alembic", *other} & modules_a_service_loads(database_url)
