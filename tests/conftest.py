"""Fixtures: real nats-server processes and real databases, nothing mocked.

- ``nats_server``: one embedded nats-server for the session; tests keep apart by
  using unique agent and tool names (and so unique subjects and consumers).
- ``own_nats``: a private server for a test that kills or restarts it.
- ``database_url``: every database test runs on SQLite, and on PostgreSQL too when
  ``BALLAST_TEST_POSTGRES_URL`` is set (CI sets it; a server that does not answer
  then fails the tests, it never skips them). Each test gets a fresh database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from outbox import sqlite_url
from outbox.schema import migrate
from services.embedded import EmbeddedNats

POSTGRES_URL = os.environ.get("BALLAST_TEST_POSTGRES_URL")
DATABASES = ["sqlite", *(["postgres"] if POSTGRES_URL else [])]


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(tmp_path / "own-nats") as server:
        yield server


@pytest.fixture(params=DATABASES)
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new database without any table."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "test.db")
        return
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def database_url(empty_database_url: str) -> str:
    """A new database at the current schema, as 'ballast db upgrade' leaves it."""
    await migrate(empty_database_url)
    return empty_database_url


class fresh_postgres_database:
    """A new, empty PostgreSQL database on the configured server, dropped afterwards."""

    def __init__(self) -> None:
        assert POSTGRES_URL, "BALLAST_TEST_POSTGRES_URL is not set"
        self.base = make_url(POSTGRES_URL)
        self.name = f"ballast_test_{uuid.uuid4().hex[:12]}"

    def _admin_dsn(self) -> str:
        return self.base.set(drivername="postgresql").render_as_string(hide_password=False)

    async def __aenter__(self) -> str:
        conn = await asyncpg.connect(self._admin_dsn(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    async def __aexit__(self, *exc_info: object) -> None:
        conn = await asyncpg.connect(self._admin_dsn(), timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()
