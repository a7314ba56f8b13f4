"""What every benchmark shares: a fresh embedded broker, repeated runs, medians, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.embedded import EmbeddedNats, nats_server_binary

RUNS = int(os.environ.get("BALLAST_BENCH_RUNS", "3"))
"""Each figure is the median of this many runs."""

ROOT = Path(__file__).resolve().parents[1]
"""The project's directory: where the benchmark's own processes start."""


@dataclass
class Figure:
    """One measured rate, the raw reference it is compared with, and the runs behind it."""

    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    reference: str | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")


async def repeat(figure: Figure, once: Callable[[], Awaitable[float]]) -> Figure:
    """Run ``once`` RUNS times and keep each result in ``figure``."""
    for _ in range(RUNS):
        figure.runs.append(await once())
    return figure


@asynccontextmanager
async def fresh_broker() -> AsyncIterator[EmbeddedNats]:
    """An embedded nats-server of its own, on a temporary file store."""
    with tempfile.TemporaryDirectory(prefix="ballast-bench-") as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            yield server


def rate(count: int, started: float) -> float:
    """Messages per second since ``started`` (a perf_counter reading)."""
    return count / (time.perf_counter() - started)


def machine() -> dict[str, str]:
    """Facts about where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = subprocess.run(
        [str(nats_server_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "nats_server": server,
        "system": f"{platform.system()} {platform.release()}",
    }
