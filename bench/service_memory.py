"""Resident memory of one ``ballast run`` process serving the no-op tool: idle, and at
its peak while it serves a burst of durable calls (pool of 64, so up to 64 at once).

What a replica costs in memory decides how many fit on a machine; the peak under load
adds the in-flight calls, sessions and buffers. The process is the one bench.processes
starts and the calls are published the same way (and checked for exactly-once). RSS is
read from /proc/<pid>/status, so this runs on Linux only.

``python -m bench.service_memory`` prints the figures (median of BALLAST_BENCH_RUNS runs)
on SQLite and, when a server answers, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

from bench.calls import check_inbox, run_calls
from bench.common import RUNS
from bench.databases import postgres_available
from bench.processes import CALLS, fresh, tool_processes
from services.embedded import EmbeddedNats

IDLE_S = 3.0
"""How long the started process sits idle before its idle RSS is read."""
SAMPLE_S = 0.05
"""RSS is read this often while the calls run."""


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` in MB (VmRSS, in kB, of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


async def service_rss_mb(
    server: EmbeddedNats, database_url: str, calls: int
) -> tuple[float, float]:
    """The service process's RSS in MB after ~3 s idle, and its peak while serving ``calls``."""
    async with tool_processes(server, database_url, 1) as served:
        (pid,) = served.pids
        await asyncio.sleep(IDLE_S)
        idle = rss_mb(pid)
        samples: list[float] = []

        async def sample() -> None:
            while True:
                samples.append(rss_mb(pid))
                await asyncio.sleep(SAMPLE_S)

        sampler = asyncio.create_task(sample())
        try:
            await run_calls(server, served.key, calls)
        finally:
            sampler.cancel()
        samples.append(rss_mb(pid))
    await check_inbox(database_url, calls)
    return idle, max(samples)


async def main() -> None:
    databases = ["SQLite"]
    if await postgres_available():
        databases.append("PostgreSQL")
    for database in databases:
        runs = []
        for _ in range(RUNS):
            async with fresh(database) as (server, url):
                runs.append(await service_rss_mb(server, url, CALLS))
        idle, peak = [r[0] for r in runs], [r[1] for r in runs]
        for label, values in (("idle", idle), (f"peak under {CALLS} calls", peak)):
            shown = " / ".join(f"{v:.1f}" for v in values)
            print(
                f"service RSS, {database}, {label}: {statistics.median(values):.1f} MB ({shown})",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
