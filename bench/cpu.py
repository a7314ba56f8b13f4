"""Where a durable tool call's CPU goes on this machine, process by process.

A rate is a CPU budget: on 2 cores, 3,000 calls/s leaves about 667 us of CPU per call
for everything the machine runs (the tool's processes, nats-server, PostgreSQL and
the caller); 2,000 calls/s in one process leaves that process 500 us of its one event
loop per call. These figures read each process's CPU time from /proc while a burst of
calls runs, and the same for FastStream alone (its no-op handler as Ballast configures
it, in processes of their own, no database), so that a target beyond the budget shows
as such and the part that takes the budget is named. Linux only.

PostgreSQL is counted as the server's processes on this machine (every process named
``postgres``); a backend that ends during the run takes its CPU time with it, which
does not happen here (the pools keep their connections). ``python -m bench.cpu`` prints
the figures (median of BALLAST_BENCH_RUNS runs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.calls import check_inbox, run_calls
from bench.common import RUNS, fresh_broker
from bench.databases import postgres_available
from bench.floors import faststream_workers
from bench.peers import drive_noop
from bench.processes import fresh, tool_processes
from services.embedded import EmbeddedNats

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

Pids = Callable[[], list[int]]
"""The processes of one part of the machine, looked up when the meter reads them."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and all its threads so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (none when it runs elsewhere)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:  # ended meanwhile
                continue
    return pids


class CpuMeter:
    """CPU time each part of the machine spends between `start` and `per_call_us`."""

    def __init__(self, parts: dict[str, Pids]) -> None:
        self.parts = parts
        self._before: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self._before = self._read()

    def per_call_us(self, calls: int) -> dict[str, float]:
        """Microseconds of CPU per call each part spent since `start`; a process that
        started meanwhile counts from zero."""
        after = self._read()
        return {
            part: sum(t - self._before[part].get(pid, 0.0) for pid, t in times.items())
            / calls
            * 1e6
            for part, times in after.items()
        }

    def _read(self) -> dict[str, dict[int, float]]:
        read: dict[str, dict[int, float]] = {}
        for part, pids in self.parts.items():
            read[part] = {}
            for pid in pids():
                try:
                    read[part][pid] = cpu_seconds(pid)
                except OSError:  # ended meanwhile
                    continue
        return read


def _broker_and_caller(server: EmbeddedNats) -> dict[str, Pids]:
    if server.pid is None:
        raise RuntimeError("the embedded nats-server is not running")
    broker_pid = server.pid
    return {"nats-server": lambda: [broker_pid], "caller": lambda: [os.getpid()]}


async def tool_processes_cpu_us(database: str, processes: int, calls: int) -> dict[str, float]:
    """CPU per call of each part while ``processes`` `ballast run` replicas of the no-op
    tool serve ``calls`` durable calls (bench.processes; exactly once checked)."""
    async with fresh(database) as (server, url):
        async with tool_processes(server, url, processes) as served:
            parts = {"tool processes": lambda: served.pids, **_broker_and_caller(server)}
            if database == "PostgreSQL":
                parts["PostgreSQL"] = postgres_pids
            meter = CpuMeter(parts)
            meter.start()
            await run_calls(server, served.key, calls)
            used = meter.per_call_us(calls)
        await check_inbox(url, calls)
    return used


async def faststream_cpu_us(processes: int, calls: int) -> dict[str, float]:
    """CPU per call of each part while ``processes`` FastStream workers, configured as
    Ballast configures its broker, serve ``calls`` no-op calls with no database."""
    async with fresh_broker() as server, faststream_workers(server, processes) as (prefix, pids):
        meter = CpuMeter({"FastStream processes": lambda: pids, **_broker_and_caller(server)})
        meter.start()
        await drive_noop(server, prefix, calls)
        return meter.per_call_us(calls)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each part's median over ``runs`` (each a reading of `CpuMeter.per_call_us`)."""
    return {part: statistics.median(run[part] for run in runs) for part in runs[0]}


async def main() -> None:
    shapes = [("SQLite", 1)]
    if await postgres_available():
        shapes.append(("PostgreSQL", 2))
    for database, processes in shapes:
        runs = [await tool_processes_cpu_us(database, processes, 4_000) for _ in range(RUNS)]
        shown = ", ".join(f"{part} {us:,.0f}" for part, us in medians(runs).items())
        print(f"CPU us per call, {processes} tool process(es), {database}: {shown}", flush=True)
    runs = [await faststream_cpu_us(2, 4_000) for _ in range(RUNS)]
    shown = ", ".join(f"{part} {us:,.0f}" for part, us in medians(runs).items())
    print(f"CPU us per call, FastStream alone, 2 processes: {shown}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
