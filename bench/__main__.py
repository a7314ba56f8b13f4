"""``python -m bench`` (``make bench``): run every benchmark, print a table, write JSON.

Sizes can be lowered for a quick look: BALLAST_BENCH_RUNS (default 3),
BALLAST_BENCH_SCALE (default 1.0, multiplies every message count).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import backlog, cpu, floors, processes
from bench.common import ROOT, RUNS, Figure, fresh_broker, machine, repeat
from bench.databases import postgres_available, postgres_database, sqlite_database
from bench.raw_nats import consume_rate, publish_rate, round_trip_ms
from bench.relay import backlog_rate, relay_rate
from bench.runtime import step_overhead_at_load_ms, step_overhead_ms, summary, task_rate
from bench.service_memory import service_rss_mb
from bench.tool_calls import tool_call_rate
from bench.trace_time import trace_ms
from outbox import Database as OutboxDatabase
from services.embedded import EmbeddedNats
from services.logging import configure_logging

SCALE = float(os.environ.get("BALLAST_BENCH_SCALE", "1.0"))
RESULTS = Path(__file__).parent / "results"


def n(count: int) -> int:
    return max(100, int(count * SCALE))


Database = Callable[[], AbstractAsyncContextManager[str]]
"""Makes a fresh, migrated database and yields its URL."""


async def measure(console: Console) -> list[Figure]:
    pg = await postgres_available()
    databases: list[tuple[str, Database]] = [("SQLite", sqlite_database)]
    if pg:
        databases.append(("PostgreSQL", postgres_database))
    async with fresh_broker() as server:
        figures = await _raw(console, server)
        by_name = {f.name: f for f in figures}
        publish, consume_publish = by_name[RAW_PUBLISH], by_name[RAW_CONSUME_PUBLISH]
        figures += await _relay(console, server, databases, publish)
        after_relay = len(figures)
        console.print("tool calls through the service host ...")
        for label, database in databases:
            figure = Figure(
                f"e2e: durable tool calls, 1 process, {label}",
                "calls/s",
                reference=consume_publish.name,
                note="validate, inbox check, no-op tool, inbox + result commit, relay",
            )
            figures.append(await repeat(figure, partial(_tool_calls, server, database, n(2_000))))
        figures += await _processes(console, pg, consume_publish.name)
        console.print("durable runtime ...")
        for label, database in databases:
            figures += await _runtime(server, database, label, consume_publish)
        console.print("trace of a 200-step task ...")
        for label, database in databases:
            figures += await _trace(server, database, label)
        figures += await _peers(console, consume_publish.name)
        figures += await _floors(console, server, databases, consume_publish.name)
        figures += await _cpu(console, pg)
        # Last, listed with the relay: writing a million rows keeps the disk busy for
        # minutes after (checkpoints), which slowed the figures measured after it.
        figures[after_relay:after_relay] = await _backlogs(console, server, databases, pg, publish)
    return figures


RAW_PUBLISH = "raw: JetStream publish (async, acked, Nats-Msg-Id)"
RAW_CONSUME_PUBLISH = "raw: consume + publish result + ack"
RAW_P50 = "raw: round trip p50 (request -> pull -> reply)"
RAW_P99 = "raw: round trip p99"


async def _raw(console: Console, server: EmbeddedNats) -> list[Figure]:
    """What nats-py alone does on this machine: the references of every ratio."""
    console.print("raw nats-py ...")
    figures = [
        await repeat(Figure(RAW_PUBLISH, "msgs/s"), lambda: publish_rate(server, n(20_000))),
        await repeat(
            Figure("raw: pull consume + ack (fetch 100)", "msgs/s"),
            lambda: consume_rate(server, n(20_000)),
        ),
        await repeat(
            Figure(RAW_CONSUME_PUBLISH, "msgs/s"),
            lambda: consume_rate(server, n(10_000), reply=True),
        ),
    ]
    console.print("round trips ...")
    raw_p50, raw_p99 = Figure(RAW_P50, "ms"), Figure(RAW_P99, "ms")
    for _ in range(RUNS):
        median, tail = summary(await round_trip_ms(server, n(300)))
        raw_p50.runs.append(median)
        raw_p99.runs.append(tail)
    return [*figures, raw_p50, raw_p99]


async def _relay(
    console: Console, server: EmbeddedNats, databases: list[tuple[str, Database]], publish: Figure
) -> list[Figure]:
    """The relay draining 10,000 rows written by units of work."""
    console.print("relay ...")
    return [
        await repeat(
            Figure(f"relay: outbox rows -> stream, {label}", "rows/s", reference=publish.name),
            partial(_drained, server, database, relay_rate, n(10_000)),
        )
        for label, database in databases
    ]


async def _backlogs(
    console: Console,
    server: EmbeddedNats,
    databases: list[tuple[str, Database]],
    pg: bool,
    publish: Figure,
) -> list[Figure]:
    """The relay draining a backlog of a million rows, and on PostgreSQL 1,000 rows among
    a million sent ones."""
    console.print("relay on a backlog of 1,000,000 rows ...")
    rows = n(1_000_000)
    figures = [
        await repeat(
            Figure(
                f"relay: outbox rows -> stream, backlog of {rows:,}, {label}",
                "rows/s",
                reference=publish.name,
            ),
            partial(_drained, server, database, backlog_rate, rows),
        )
        for label, database in databases
    ]
    if pg:
        console.print("relay on a table of 1,000,000 sent rows ...")
        async with postgres_database() as url:
            db = OutboxDatabase(url)
            await backlog.fill(db)
            big = Figure(
                "relay: 1,000 unsent among 1,000,000 sent rows, PostgreSQL",
                "rows/s",
                reference=publish.name,
            )
            figures.append(await repeat(big, lambda: backlog.relay_among_sent(server, db)))
            await db.dispose()
    return figures


async def _drained(
    server: EmbeddedNats,
    database: Database,
    drained: Callable[[EmbeddedNats, str, int], Awaitable[float]],
    rows: int,
) -> float:
    """One run of a relay figure on a fresh database."""
    async with database() as url:
        return await drained(server, url, rows)


async def _runtime(
    server: EmbeddedNats,
    database: Database,
    label: str,
    consume_publish: Figure,
) -> list[Figure]:
    """Tasks/s of the demo's shape and the cost of a step, at low load and at 80%."""
    shaped = Figure(
        f"runtime: tasks/s, 1 model step + 3 tool calls, {label}",
        "tasks/s",
        reference=consume_publish.name,
        note="each task is 4 durable steps",
    )
    figures = [await repeat(shaped, partial(_tasks, server, database, n(300)))]
    p50 = Figure(f"runtime: step overhead p50, low load, {label}", "ms", reference=RAW_P50)
    p99 = Figure(f"runtime: step overhead p99, low load, {label}", "ms", reference=RAW_P99)
    for _ in range(RUNS):
        async with database() as url:
            samples = await step_overhead_ms(server, url, n(300) // 10)
        median, tail = summary(samples)
        p50.runs.append(median)
        p99.runs.append(tail)
    return [*figures, p50, p99, *await _under_load(server, database, label)]


async def _trace(server: EmbeddedNats, database: Database, label: str) -> list[Figure]:
    query = Figure(f"trace: 200-step task, read, {label}", "ms")
    shown = Figure(f"trace: 200-step task, read + render, {label}", "ms")
    for _ in range(RUNS):
        async with database() as url:
            read_ms, render_ms = await trace_ms(server, url)
        query.runs.append(read_ms)
        shown.runs.append(render_ms)
    return [query, shown]


async def _under_load(server: EmbeddedNats, database: Database, label: str) -> list[Figure]:
    """Step overhead p50/p99 with tasks arriving at 80% of the host's maximum rate."""
    p50 = Figure(f"runtime: step overhead p50, 80% load, {label}", "ms", reference=RAW_P50)
    p99 = Figure(f"runtime: step overhead p99, 80% load, {label}", "ms", reference=RAW_P99)
    for _ in range(RUNS):
        async with database() as url:
            maximum, samples = await step_overhead_at_load_ms(server, url, n(900) // 3, 0.8)
        median, tail = summary(samples)
        p50.runs.append(median)
        p99.runs.append(tail)
        p50.note = f"maximum {maximum:.1f} tasks/s of 10 calls"
    return [p50, p99]


async def _processes(console: Console, pg: bool, reference: str) -> list[Figure]:
    """Tool calls served by 1, 2 and 4 ``ballast run`` processes; one process's memory."""
    console.print("tool calls served by processes of their own ...")
    shapes = [("SQLite", 1)] + ([("PostgreSQL", count) for count in (1, 2, 4)] if pg else [])
    figures = []
    for database, count in shapes:
        figure = Figure(
            f"e2e: durable tool calls, {count} tool process(es), {database}",
            "calls/s",
            reference=reference,
            note="the calls come from the benchmark's process; exactly once checked",
        )
        figures.append(
            await repeat(figure, partial(processes.calls_per_second, database, count, n(2_000)))
        )
    for database in [label for label, count in shapes if count == 1]:
        idle = Figure(f"memory: idle tool service (RSS), {database}", "MB")
        peak = Figure(f"memory: tool service under load (peak RSS), {database}", "MB")
        for _ in range(RUNS):
            async with processes.fresh(database) as (server, url):
                idle_mb, peak_mb = await service_rss_mb(server, url, n(2_000))
            idle.runs.append(idle_mb)
            peak.runs.append(peak_mb)
        figures += [idle, peak]
    return figures


async def _peers(console: Console, reference: str) -> list[Figure]:
    """The same work on other stacks, in the same run, from their own virtualenv.

    The peers' dependencies (aiohttp, psycopg, ...) stay out of Ballast's environment,
    where they would change what Ballast's processes import and weigh.
    ``BALLAST_BENCH_PEERS_PYTHON`` names that environment's python (``make bench``
    sets it up); without it, the peers are skipped.
    """
    python = os.environ.get("BALLAST_BENCH_PEERS_PYTHON")
    if not python:
        console.print("peers skipped: run 'make bench', or set BALLAST_BENCH_PEERS_PYTHON")
        return []
    console.print("peers ...")
    done = await asyncio.create_subprocess_exec(
        python, "-m", "bench.peers", "--json",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await done.communicate()
    if done.returncode != 0:
        raise RuntimeError(f"the peers' benchmark failed (exit {done.returncode})")
    measured = json.loads(out.decode().strip().splitlines()[-1])
    return [Figure(**(figure | {"reference": reference})) for figure in measured]


async def _floors(
    console: Console, server: EmbeddedNats, databases: list[tuple[str, Database]], reference: str
) -> list[Figure]:
    """What the parts cost on their own (bench.floors): a target below one is out of reach."""
    console.print("floors ...")
    figures = [
        await repeat(
            Figure(
                "floor: FastStream as Ballast configures it, no database",
                "calls/s",
                reference=reference,
                note="flow-controlled pull, 64 workers, telemetry + Prometheus middlewares",
            ),
            partial(floors.faststream_configured_rate, server, n(2_000)),
        ),
        await repeat(
            Figure(
                "floor: FastStream as Ballast configures it, 2 processes, no database",
                "calls/s",
                reference=reference,
                note="the same, served by 2 processes of their own sharing the consumer",
            ),
            partial(floors.faststream_configured_processes_rate, server, n(2_000), 2),
        ),
    ]
    for label, database in databases:
        driver = Figure(f"floor: one durable commit p50, driver alone, {label}", "ms")
        engine = Figure(f"floor: one durable commit p50, SQLAlchemy async, {label}", "ms")
        step = Figure(f"floor: raw step p50 (round trip, a commit at each end), {label}", "ms")
        step_tail = Figure(f"floor: raw step p99, {label}", "ms")
        for _ in range(RUNS):
            async with database() as url:
                driver_ms, engine_ms = await floors.commit_ms(url, n(300))
                step_ms, step_tail_ms = summary(await floors.raw_step_ms(server, url, n(300)))
            driver.runs.append(driver_ms)
            engine.runs.append(engine_ms)
            step.runs.append(step_ms)
            step_tail.runs.append(step_tail_ms)
        memory = Figure(f"floor: RSS of the libraries alone, {label}", "MB")
        memory = await repeat(memory, partial(floors.libraries_rss_mb, label))
        figures += [driver, engine, step, step_tail, memory]
    return figures


async def _cpu(console: Console, pg: bool) -> list[Figure]:
    """CPU per call of each process (bench.cpu): the tool's own processes against
    FastStream's alone, and what nats-server, PostgreSQL and the caller take of the
    machine's budget."""
    console.print("CPU per call ...")
    shapes = [("SQLite", 1)] + ([("PostgreSQL", 2)] if pg else [])
    runs = {
        f"{count} tool process{'es' if count > 1 else ''}, {database}": partial(
            cpu.tool_processes_cpu_us, database, count, n(4_000)
        )
        for database, count in shapes
    }
    runs["FastStream alone, 2 processes, no database"] = partial(cpu.faststream_cpu_us, 2, n(4_000))
    figures = []
    for shape, once in runs.items():
        readings = [await once() for _ in range(RUNS)]
        figures += [
            Figure(f"cpu per call: {part}, {shape}", "us", [r[part] for r in readings])
            for part in readings[0]
        ]
    return figures


async def _tasks(server: EmbeddedNats, database: Database, tasks: int) -> float:
    async with database() as url:
        return await task_rate(server, url, tasks)


async def _tool_calls(server: EmbeddedNats, database: Database, calls: int) -> float:
    async with database() as url:
        return await tool_call_rate(server, url, calls)


def render(figures: list[Figure], console: Console) -> None:
    by_name = {f.name: f for f in figures}
    table = Table(title=f"Ballast benchmark (median of {RUNS} runs)")
    for column in ("figure", "median", "unit", "runs", "vs raw", "raw reference"):
        table.add_column(column, justify="right" if column in ("median", "vs raw") else "left")
    for f in figures:
        ref = by_name.get(f.reference or "")
        ratio = f"{f.median / ref.median:.3g}x" if ref else ""
        table.add_row(
            f.name,
            _shown(f.median, f.unit),
            f.unit,
            " ".join(_shown(r, f.unit) for r in f.runs),
            ratio,
            ref.name if ref else "",
        )
    console.print(table)
    against = Table(title="Ballast against its peers, same run (calls/s, ratio of medians)")
    for column in ("Ballast", "peer", "ratio"):
        against.add_column(column, justify="right" if column == "ratio" else "left")
    for row in comparisons(figures):
        against.add_row(row.ballast, row.peer, f"{row.ratio:.3g}x")
    console.print(against)


@dataclass(frozen=True)
class Comparison:
    ballast: str
    peer: str
    ratio: float


def comparisons(figures: list[Figure]) -> list[Comparison]:
    """Each durable tool-call figure of Ballast divided by each peer's, same work."""
    ours = [f for f in figures if f.name.startswith("e2e: durable tool calls")]
    peers = [f for f in figures if f.name.startswith("peer: ")]
    return [Comparison(f.name, p.name, f.median / p.median) for f in ours for p in peers]


def _shown(value: float, unit: str) -> str:
    decimals = {"ms": 2, "MB": 1}.get(unit, 0)
    return f"{value:,.{decimals}f}"


def main() -> None:
    configure_logging("console", "warning")
    console = Console(width=None if Console().is_terminal else 160)
    facts = machine()
    console.print(" | ".join(f"{k}: {v}" for k, v in facts.items()))
    started = time.time()
    figures = asyncio.run(measure(console))
    render(figures, console)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "machine": facts,
        "runs": RUNS,
        "scale": SCALE,
        "started_at": started,
        "figures": [
            {
                "name": f.name,
                "unit": f.unit,
                "median": f.median,
                "runs": f.runs,
                "reference": f.reference,
                "ratio": (
                    f.median / next(r.median for r in figures if r.name == f.reference)
                    if f.reference
                    else None
                ),
                "note": f.note,
            }
            for f in figures
        ],
        "comparisons": [asdict(c) for c in comparisons(figures)],
    }
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
