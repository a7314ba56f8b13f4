"""Floors: what the parts Ballast is built on cost on their own, on this machine.

A target below a floor cannot be met by Ballast's own code, only by other parts;
these figures say where the floors are:

- FastStream's broker as Ballast configures it (its telemetry and Prometheus
  middlewares, pulled with flow control, a pool of 64 workers), running the no-op
  handler with no database: the most a tool host can do before Ballast adds anything;
  in this process, and served by two processes of their own sharing the consumer.
- One durable commit of one row, one after the other: through the driver alone and
  through SQLAlchemy's async engine, as Ballast commits. A step waits for three
  (the agent's journal and call, the tool's claim, the tool's result).
- A raw step, one after the other: the raw round trip through the broker with a
  durable commit at each end, made as group commit's writer makes it but bare.
- The resident memory of a process that only imports the libraries a service needs
  on each database.

``python -m bench.floors`` prints them (median of BALLAST_BENCH_RUNS runs).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import asyncpg
import nats
from faststream.nats import NatsBroker, PullSub
from prometheus_client import CollectorRegistry
from sqlalchemy import make_url, text

from bench.common import ROOT, RUNS, fresh_broker
from bench.databases import postgres_available, postgres_database, sqlite_database
from bench.noop_app import POOL
from bench.peers import drive_noop, faststream_rate, noop_stream
from bench.processes import READY_TIMEOUT_S, poll, pulling, stop_processes
from bench.raw_nats import round_trip_ms
from bench.runtime import summary
from outbox import Database
from outbox.asyncpg_writer import asyncpg_dsn, writer_connection
from outbox.database import configure_sqlite_connection
from services.broker import NatsCredentials, make_broker
from services.embedded import EmbeddedNats
from services.host import FETCH_TIMEOUT_S

LIBRARIES = (
    "faststream.nats",
    "faststream.nats.prometheus",
    "nats.js",
    "sqlmodel",
    "sqlalchemy.ext.asyncio",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "nacl.signing",
    "typer",
)
"""What an idle ``ballast run`` process imports from outside Ballast on any database (its
CLI, broker, database layer, settings, logs, metrics and signatures; its HTTP endpoint
is the standard library's and prometheus_client's). They are imported as ``ballast run``
imports them, leaving out rich and uvicorn (`services.cli.left_out`).
Tracing is off, as in the memory figures: OpenTelemetry's SDK and FastStream's
telemetry middleware are loaded only when it is on (`services.trace_context`)."""
DRIVERS = {
    "SQLite": ("aiosqlite", "sqlalchemy.dialects.sqlite.aiosqlite"),
    "PostgreSQL": ("asyncpg", "sqlalchemy.dialects.postgresql.asyncpg"),
}
"""The driver and SQLAlchemy dialect a service loads for its database, and only those."""
_SCRATCH = "CREATE TABLE IF NOT EXISTS bench_commit (id {} PRIMARY KEY, n INTEGER)"
_INSERT_SQLITE = "INSERT INTO bench_commit (n) VALUES (?)"
_INSERT_PG = "INSERT INTO bench_commit (n) VALUES ($1)"


def configured_broker(url: str) -> NatsBroker:
    """FastStream's broker as a Ballast service makes it (its middlewares included)."""
    return make_broker(
        url,
        name="floor",
        credentials=NatsCredentials(),
        registry=CollectorRegistry(),
        closing=lambda: True,  # it disconnects only when the run is over
    )


def configured_consumption() -> dict[str, Any]:
    """The subscriber options of a Ballast service (a pool of 64); its subscriber is then
    pulled with flow control (`services.pull_flow.flow_controlled`)."""
    return {"pull_sub": PullSub(batch_size=1, timeout=FETCH_TIMEOUT_S), "max_workers": POOL}


async def faststream_configured_rate(server: EmbeddedNats, count: int) -> float:
    """Calls/s of the no-op handler on Ballast's broker and consumption path, no database."""
    return await faststream_rate(
        server,
        count,
        configured_broker(server.url),
        flow_control=True,
        **configured_consumption(),
    )


async def faststream_configured_processes_rate(
    server: EmbeddedNats, count: int, processes: int
) -> float:
    """Calls/s of the same no-op served by ``processes`` processes of their own
    (`bench.faststream_worker`) sharing one consumer: the floor of as many tool processes.
    Every process must have handled some of the calls."""
    async with faststream_workers(server, processes) as (prefix, _):
        return await drive_noop(server, prefix, count)


@asynccontextmanager
async def faststream_workers(
    server: EmbeddedNats, processes: int
) -> AsyncIterator[tuple[str, list[int]]]:
    """``processes`` workers of `bench.faststream_worker`, each pulling from the shared
    consumer before the block starts; yields the calls' subject prefix and their pids.
    On the way out they are stopped, and each must have handled some of the calls."""
    prefix = f"fp{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(server.url)
    workers: list[asyncio.subprocess.Process] = []
    try:
        js = nc.jetstream()
        await js.add_stream(name=noop_stream(prefix), subjects=[f"{prefix}.call"])
        for _ in range(processes):
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.faststream_worker", server.url, prefix,
                cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            workers.append(worker)
        for worker in workers:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), READY_TIMEOUT_S)
            if line.strip() != b"ready":
                raise RuntimeError(f"a FastStream worker did not start (exit {worker.returncode})")
        ready = functools.partial(pulling, js, noop_stream(prefix), "bench", processes)
        await poll(ready, f"{processes} pull requests")
        yield prefix, [worker.pid for worker in workers]
    finally:
        await stop_processes(workers)
        await nc.close()
    handled = [await _handled(worker) for worker in workers]
    if 0 in handled:
        raise RuntimeError(f"a FastStream worker took no calls (calls per worker: {handled})")


async def _handled(worker: asyncio.subprocess.Process) -> int:
    assert worker.stdout is not None
    out = (await worker.stdout.read()).decode().split()
    return int(out[-1]) if out[-2:-1] == ["handled"] else 0


async def commit_ms(url: str, commits: int) -> tuple[float, float]:
    """Median milliseconds of one durable one-row commit at a time: through the driver
    alone, then through SQLAlchemy's async engine (Ballast's settings, such as WAL and
    synchronous=FULL on SQLite)."""
    async with _driver(url) as execute:
        driver_ms = await _timed(execute, commits)
    db = Database(url)
    try:
        insert = text("INSERT INTO bench_commit (n) VALUES (:n)")

        async def through_sqlalchemy(n: int) -> None:
            async with db.engine.begin() as conn:
                await conn.execute(insert, {"n": n})

        engine_ms = await _timed(through_sqlalchemy, commits)
    finally:
        await db.dispose()
    return driver_ms, engine_ms


async def raw_step_ms(server: EmbeddedNats, url: str, steps: int) -> list[float]:
    """Each raw step's milliseconds: the raw round trip with a durable one-row commit at
    each end (`bench.raw_nats.round_trip_ms`), made as group commit's writer commits but
    bare, one step at a time. The least a step of Ballast's does: its two synced commits
    and its two hops through the broker, here with no claim, no FastStream and no
    Ballast."""
    async with _writer_commit(url) as commit:
        return await round_trip_ms(server, steps, commit)


@asynccontextmanager
async def _writer_commit(url: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """A function committing one row as group commit's writer commits, bare, on a
    connection opened as the writer opens its own: on SQLite through sqlite3 on the event
    loop's thread (`outbox.sqlite_writer`; aiosqlite's hand-off to its thread costs more),
    on PostgreSQL as one statement that commits by itself (`outbox.asyncpg_one_statement`;
    BEGIN and COMMIT are a round trip each)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        sqlite = sqlite3.connect(parsed.database or "")
        try:
            configure_sqlite_connection(sqlite)
            sqlite.execute(_SCRATCH.format("INTEGER"))

            async def sqlite_commit(n: int) -> None:
                sqlite.execute("BEGIN IMMEDIATE")
                sqlite.execute(_INSERT_SQLITE, (n,))
                sqlite.execute("COMMIT")

            yield sqlite_commit
        finally:
            sqlite.close()
        return
    pg = await writer_connection(asyncpg_dsn(parsed))
    try:
        await pg.execute(_SCRATCH.format("SERIAL"))

        async def pg_commit(n: int) -> None:
            await pg.execute(_INSERT_PG, n)

        yield pg_commit
    finally:
        await pg.close()


@asynccontextmanager
async def _driver(url: str) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """A function committing one row of a scratch table in a transaction through the bare
    driver of ``url``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        async with aiosqlite.connect(parsed.database or "", isolation_level=None) as conn:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute(_SCRATCH.format("INTEGER"))

            async def sqlite_commit(n: int) -> None:
                await conn.execute("BEGIN")
                await conn.execute(_INSERT_SQLITE, (n,))
                await conn.execute("COMMIT")

            yield sqlite_commit
        return
    conn = await asyncpg.connect(asyncpg_dsn(parsed))
    try:
        await conn.execute(_SCRATCH.format("SERIAL"))

        async def pg_commit(n: int) -> None:
            async with conn.transaction():
                await conn.execute(_INSERT_PG, n)

        yield pg_commit
    finally:
        await conn.close()


async def _timed(commit: Callable[[int], Awaitable[None]], commits: int) -> float:
    samples = []
    for n in range(commits):
        started = time.perf_counter()
        await commit(n)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def libraries_rss_mb(database: str) -> float:
    """RSS in MB of a fresh interpreter that has imported `LIBRARIES` and the driver of
    ``database`` (a key of `DRIVERS`), as ``ballast run`` imports them, and nothing else."""
    probe = (
        "import importlib, sys\n"
        "from services.cli.left_out import leaving_out\n"
        "with leaving_out():\n"
        "    for name in sys.argv[1:]: importlib.import_module(name)\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, *LIBRARIES, *DRIVERS[database],
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"importing the libraries failed (exit {proc.returncode})")
    return int(out) / 1024


async def main() -> None:
    databases = [("SQLite", sqlite_database)]
    if await postgres_available():
        databases.append(("PostgreSQL", postgres_database))
    async with fresh_broker() as server:
        rates = [await faststream_configured_rate(server, 2_000) for _ in range(RUNS)]
        two = [await faststream_configured_processes_rate(server, 2_000, 2) for _ in range(RUNS)]
        print(f"FastStream as Ballast configures it: {statistics.median(rates):,.0f} calls/s")
        print(f"the same, 2 processes: {statistics.median(two):,.0f} calls/s")
        for label, database in databases:
            async with database() as url:
                driver, engine = await commit_ms(url, 300)
                step, tail = summary(await raw_step_ms(server, url, 300))
            print(f"one commit, {label}: driver {driver:.2f} ms, SQLAlchemy async {engine:.2f} ms")
            print(f"raw step, {label}: p50 {step:.2f} ms, p99 {tail:.2f} ms")
            print(f"RSS of the libraries alone, {label}: {await libraries_rss_mb(label):.1f} MB")


if __name__ == "__main__":
    asyncio.run(main())
