"""The benchmark's floors measure what they say: the memory floor imports what a service
on that database loads from outside Ballast (nothing more, or the libraries would seem to
weigh more than they do), and a raw step commits at both of its ends."""

from __future__ import annotations

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.floors import DRIVERS, LIBRARIES, raw_step_ms
from services.embedded import EmbeddedNats
from tests.helpers import modules_a_service_loads


def test_the_memory_floor_imports_only_what_a_service_loads(database_url: str) -> None:
    database = "SQLite" if make_url(database_url).get_backend_name() == "sqlite" else "PostgreSQL"
    loaded = modules_a_service_loads(database_url)
    assert not {*LIBRARIES, *DRIVERS[database]} - loaded
    assert not {m for m in loaded if m.startswith("opentelemetry.sdk")}, "tracing is off"


async def test_a_raw_step_commits_at_each_end(
    nats_server: EmbeddedNats, empty_database_url: str
) -> None:
    steps = await raw_step_ms(nats_server, empty_database_url, 5)
    assert len(steps) == 5
    assert all(ms > 0 for ms in steps)
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.scalar(text("SELECT count(*) FROM bench_commit"))
    finally:
        await engine.dispose()
    assert rows == 10
