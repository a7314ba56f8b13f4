"""``python -m bench`` (``make bench``): run every benchmark, print a table, write JSON.

Sizes can be lowered for a quick look: BALLAST_BENCH_RUNS (default 3),
BALLAST_BENCH_SCALE (default 1.0, multiplies every message count).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import RUNS, Figure, fresh_broker, machine, repeat
from bench.databases import postgres_available, postgres_database, sqlite_database
from bench.raw_nats import consume_rate, publish_rate, round_trip_ms
from bench.relay import relay_rate
from bench.runtime import step_overhead_ms, summary, task_rate
from bench.tool_calls import tool_call_rate
from bench.trace_time import trace_ms
from services.embedded import EmbeddedNats
from services.logging import configure_logging

SCALE = float(os.environ.get("BALLAST_BENCH_SCALE", "1.0"))
RESULTS = Path(__file__).parent / "results"


def n(count: int) -> int:
    return max(100, int(count * SCALE))


async def measure(console: Console) -> list[Figure]:
    figures: list[Figure] = []
    pg = await postgres_available()
    async with fresh_broker() as server:
        console.print("raw nats-py ...")
        publish = await repeat(
            Figure("raw: JetStream publish (async, acked, Nats-Msg-Id)", "msgs/s"),
            lambda: publish_rate(server, n(20_000)),
        )
        consume = await repeat(
            Figure("raw: pull consume + ack (fetch 100)", "msgs/s"),
            lambda: consume_rate(server, n(20_000)),
        )
        consume_publish = await repeat(
            Figure("raw: consume + publish result + ack", "msgs/s"),
            lambda: consume_rate(server, n(10_000), reply=True),
        )
        figures += [publish, consume, consume_publish]

        console.print("relay ...")
        async with sqlite_database() as url:
            rows = n(10_000)
            figures.append(
                await repeat(
                    Figure(
                        "relay: outbox rows -> stream, SQLite", "rows/s", reference=publish.name
                    ),
                    lambda: relay_rate(server, url, rows),
                )
            )
        if pg:
            async with postgres_database() as url:
                figures.append(
                    await repeat(
                        Figure(
                            "relay: outbox rows -> stream, PostgreSQL", "rows/s",
                            reference=publish.name,
                        ),
                        lambda: relay_rate(server, url, rows),
                    )
                )  # fmt: skip

        console.print("round trips ...")
        raw_trips: list[list[float]] = []
        for _ in range(RUNS):
            raw_trips.append(await round_trip_ms(server, n(300)))
        raw_p50 = Figure("raw: round trip p50 (request -> pull -> reply)", "ms")
        raw_p99 = Figure("raw: round trip p99", "ms")
        for samples in raw_trips:
            median, tail = summary(samples)
            raw_p50.runs.append(median)
            raw_p99.runs.append(tail)
        figures += [raw_p50, raw_p99]

        console.print("tool calls through the service host ...")
        calls = n(2_000)
        databases: list[tuple[str, Callable[[], AbstractAsyncContextManager[str]]]] = [
            ("SQLite", sqlite_database)
        ]
        if pg:
            databases.append(("PostgreSQL", postgres_database))
        for label, database in databases:
            figure = Figure(
                f"e2e: durable tool calls, 1 process, {label}",
                "calls/s",
                reference=consume_publish.name,
                note="validate, inbox check, no-op tool, inbox + result commit, relay",
            )
            figures.append(await repeat(figure, partial(_tool_calls, server, database, calls)))

        console.print("durable runtime ...")
        for label, database in databases:
            shaped = Figure(
                f"runtime: tasks/s, 1 model step + 3 tool calls, {label}",
                "tasks/s",
                reference=consume_publish.name,
                note="each task is 4 durable steps",
            )
            figures.append(await repeat(shaped, partial(_tasks, server, database, n(300))))
            p50 = Figure(
                f"runtime: step overhead p50, low load, {label}", "ms", reference=raw_p50.name
            )
            p99 = Figure(
                f"runtime: step overhead p99, low load, {label}", "ms", reference=raw_p99.name
            )
            for _ in range(RUNS):
                async with database() as url:
                    samples = await step_overhead_ms(server, url, n(300) // 10)
                median, tail = summary(samples)
                p50.runs.append(median)
                p99.runs.append(tail)
            figures += [p50, p99]

        console.print("trace of a 200-step task ...")
        for label, database in databases:
            query = Figure(f"trace: 200-step task, read, {label}", "ms")
            shown = Figure(f"trace: 200-step task, read + render, {label}", "ms")
            for _ in range(RUNS):
                async with database() as url:
                    read_ms, render_ms = await trace_ms(server, url)
                query.runs.append(read_ms)
                shown.runs.append(render_ms)
            figures += [query, shown]
    return figures


async def _tasks(
    server: EmbeddedNats, database: Callable[[], AbstractAsyncContextManager[str]], tasks: int
) -> float:
    async with database() as url:
        return await task_rate(server, url, tasks)


async def _tool_calls(
    server: EmbeddedNats, database: Callable[[], AbstractAsyncContextManager[str]], calls: int
) -> float:
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
            f"{f.median:,.0f}" if f.unit != "ms" else f"{f.median:.2f}",
            f.unit,
            " ".join(f"{r:,.0f}" if f.unit != "ms" else f"{r:.2f}" for r in f.runs),
            ratio,
            ref.name if ref else "",
        )
    console.print(table)


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
    }
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
