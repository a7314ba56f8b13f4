"""Tasks/s with 1 and 2 replicas of an I/O-bound tool service (50 ms per call).

Every service is its own ``ballast run`` process on one PostgreSQL database and an
embedded nats-server: one agent process, and one or two tool processes sharing the
tool's durable consumer. ``python -m bench.scaling`` prints the figures.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import RUNS, fresh_broker
from bench.databases import postgres_database
from bench.processes import spawn_service
from contracts import Principal, TaskRequest, TaskStatus
from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.errors import BallastError
from services.identity import SigningKey

TASKS = int(os.environ.get("BALLAST_BENCH_SCALING_TASKS", "600"))
TOOL_POOL = os.environ.get("BALLAST_BENCH_TOOL_POOL", "8")


async def tasks_per_second(server: EmbeddedNats, database_url: str, tool_replicas: int) -> float:
    key = SigningKey.generate()
    with tempfile.TemporaryDirectory(prefix="ballast-scaling-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")} | {
            "BALLAST_NATS_URL": server.url,
            "BALLAST_DATABASE_URL": database_url,
            "BALLAST_DATA_DIR": tmp,
            "BALLAST_LOG_LEVEL": "warning",
            "BALLAST_TRUSTED_KEYS": f'["{key.public_key}"]',
            "BALLAST_BENCH_TOOL_POOL": TOOL_POOL,
        }
        procs = [await spawn_service("bench.scaling_app:caller", env, Path(tmp) / "agent.log")]
        procs += [
            await spawn_service("bench.scaling_app:remote_api", env, Path(tmp) / f"tool-{i}.log")
            for i in range(tool_replicas)
        ]
        try:
            async with BallastClient(server.url, signer=key) as client:
                principal = Principal(user_id="bench", tenant="bench")
                warm = TaskRequest(agent="caller", principal=principal)
                for _ in range(120):  # the services start and create their consumers
                    try:
                        await client.run(warm, timeout_s=5)
                        break
                    except (TimeoutError, BallastError):
                        await asyncio.sleep(0.5)
                tasks = [TaskRequest(agent="caller", principal=principal) for _ in range(TASKS)]
                started = time.perf_counter()
                await asyncio.gather(*(client.submit(t) for t in tasks))
                results = await asyncio.gather(
                    *(client.wait(t.task_id, timeout_s=300) for t in tasks)
                )
                rate = TASKS / (time.perf_counter() - started)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await proc.wait()
    if any(r.status is not TaskStatus.COMPLETED for r in results):
        raise RuntimeError("a scaling task did not complete")
    return rate


async def main() -> None:
    async with fresh_broker() as server:
        for replicas in (1, 2):
            runs = []
            for _ in range(RUNS):
                async with postgres_database() as url:
                    runs.append(await tasks_per_second(server, url, replicas))
            shown = " / ".join(f"{r:.1f}" for r in runs)
            print(
                f"tool pool {TOOL_POOL}, replicas {replicas}: "
                f"{statistics.median(runs):.1f} tasks/s ({shown})"
            )


if __name__ == "__main__":
    asyncio.run(main())
