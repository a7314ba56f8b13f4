"""Databases for benchmarks: a temporary SQLite file, a fresh PostgreSQL database.

Both are migrated to the current schema, as 'ballast db upgrade' leaves them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import make_url

from outbox import sqlite_url
from outbox.schema import migrate

POSTGRES_URL = os.environ.get(
    "BALLAST_BENCH_POSTGRES_URL",
    os.environ.get(
        "BALLAST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
)


@asynccontextmanager
async def sqlite_database() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="ballast-bench-") as tmp:
        url = sqlite_url(Path(tmp) / "bench.db")
        await migrate(url)
        yield url


async def postgres_available() -> bool:
    try:
        conn = await asyncpg.connect(_admin_dsn(), timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _admin_dsn() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    name = f"ballast_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(_admin_dsn())
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(False)
        await migrate(url)
        yield url
    finally:
        conn = await asyncpg.connect(_admin_dsn())
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
