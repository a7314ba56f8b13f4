"""Crash tests: agent and tool hosts as real processes, killed with SIGKILL at random moments.

Invariants after every crash: every task completes, every side effect happened
exactly once (one row per task in the tool's own table), and every journal holds
exactly the run's three steps, once each.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from sqlalchemy import select

from contracts import TaskRequest, TaskStatus
from contracts.subjects import Stream
from outbox import Database, JournalEntry, sqlite_url
from services.client import BallastClient
from services.embedded import EmbeddedNats
from tests.helpers import PRINCIPAL, TEST_KEY, TRUST_TEST_KEY, eventually, subject_count
from tests.procs.chaos_app import effects_per_ref

ROOT = Path(__file__).resolve().parents[2]
TASKS = 300
"""Enough that all five kills land while tasks still run, however fast a host catches up."""
DONE = "ballast.event.task.completed"


class Service:
    """One ``ballast run`` process, restartable."""

    def __init__(self, target: str, env: dict[str, str], log: Path) -> None:
        self.target = target
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "run", self.target,
                cwd=ROOT, env=self.env, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        self.kills += 1

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def service_env(nats_url: str, database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")}
    return {
        **env,
        "BALLAST_NATS_URL": nats_url,
        "BALLAST_DATABASE_URL": database_url,
        "BALLAST_AUTO_MIGRATE": "true",
        "BALLAST_DATA_DIR": str(data_dir),
        "BALLAST_LOG_FORMAT": "json",
        "BALLAST_LOG_LEVEL": "warning",
        "BALLAST_ACK_WAIT_S": "2",
        "BALLAST_RELAY_SWEEP_INTERVAL_S": "0.2",
        **TRUST_TEST_KEY,
    }


@asynccontextmanager
async def agent_replicas(
    target: str, server: EmbeddedNats, database_url: str, tmp_path: Path, **env: str
) -> AsyncIterator[BallastClient]:
    """Two ``ballast run`` replicas of the agent ``target`` (with ``env`` added), and a
    client once the agent's consumer exists; the replicas stop when the block ends."""
    replicas = [
        Service(
            target,
            service_env(server.url, database_url, tmp_path / f"replica-{i}") | env,
            tmp_path / f"replica-{i}.log",
        )
        for i in (1, 2)
    ]
    for replica in replicas:
        await replica.start()
    try:
        async with BallastClient(server.url, signer=TEST_KEY) as client:
            consumer = f"agent-{target.rpartition(':')[2]}"
            ready = partial(consumer_ready, client.js, Stream.TASKS, consumer)
            await eventually(ready, timeout_s=30, what=f"{consumer} to start")

            async def all_pulling() -> bool:  # every replica has a pull request waiting
                info = await client.js.consumer_info(Stream.TASKS.value, consumer)
                return (info.num_waiting or 0) >= len(replicas)

            await eventually(all_pulling, timeout_s=30, what="both replicas to pull")
            yield client
    finally:
        for replica in replicas:
            await replica.stop()


async def _completed_at_least(js: JetStreamContext, n: int) -> bool:
    return await subject_count(js, Stream.EVENTS.value, DONE) >= n


async def consumer_ready(js: JetStreamContext, stream: Stream, name: str) -> bool:
    try:
        await js.consumer_info(stream.value, name)
    except (nats.js.errors.NotFoundError, nats.errors.TimeoutError):
        return False
    return True


@pytest.mark.chaos
@pytest.mark.parametrize("victim", ["agent", "tool"])
async def test_killed_hosts_lose_nothing_and_repeat_nothing(
    own_nats: EmbeddedNats, tmp_path: Path, victim: str
) -> None:
    """300 tasks; the agent host (or the tool host) is killed with SIGKILL five times while
    they run and started again each time."""
    agent_db, tool_db = sqlite_url(tmp_path / "agent.db"), sqlite_url(tmp_path / "tool.db")
    agent = Service(
        "tests.procs.chaos_app:chaos_agent",
        service_env(own_nats.url, agent_db, tmp_path / "agent"),
        tmp_path / "agent.log",
    )
    tool = Service(
        "tests.procs.chaos_app:record_effect",
        service_env(own_nats.url, tool_db, tmp_path / "tool"),
        tmp_path / "tool.log",
    )
    rng = random.Random(11 if victim == "agent" else 13)
    await tool.start()
    await agent.start()
    try:
        async with BallastClient(own_nats.url, signer=TEST_KEY) as client:
            for stream, name in (
                (Stream.TASKS, "agent-chaos_agent"),
                (Stream.TOOLS, "tool-record_effect"),
            ):
                await eventually(
                    partial(consumer_ready, client.js, stream, name),
                    timeout_s=30,
                    what=f"{name} to start",
                )
            tasks = [TaskRequest(agent="chaos_agent", principal=PRINCIPAL) for _ in range(TASKS)]
            for task in tasks:
                await client.submit(task)
            target = agent if victim == "agent" else tool
            done_at_kills = [0]
            for _ in range(5):
                # Kill while work is flowing: after the restarted host made some progress.
                await eventually(
                    partial(_completed_at_least, client.js, done_at_kills[-1] + 6),
                    timeout_s=60,
                    what="progress before the next kill",
                )
                await asyncio.sleep(rng.uniform(0, 0.3))
                await target.kill()
                done_at_kills.append(await subject_count(client.js, Stream.EVENTS.value, DONE))
                await target.start()
            assert done_at_kills[-1] < TASKS, "every kill landed while tasks were still running"
            results = await asyncio.gather(*(client.wait(t.task_id, timeout_s=180) for t in tasks))
    finally:
        await agent.stop()
        await tool.stop()

    assert target.kills == 5
    assert [r.status for r in results] == [TaskStatus.COMPLETED] * TASKS, (
        tmp_path / f"{victim}.log"
    ).read_text()[-3000:]
    refs = {t.task_id for t in tasks}
    per_ref = await effects_per_ref(tool_db)
    assert set(per_ref) == refs, "every task had its effect"
    assert set(per_ref.values()) == {1}, "no effect happened twice"

    db = Database(agent_db)
    try:
        async with db.session() as session:
            journal = (await session.execute(select(JournalEntry))).scalars().all()
    finally:
        await db.dispose()
    steps: dict[str, list[tuple[int, str, str]]] = {}
    for entry in journal:
        steps.setdefault(entry.task_id, []).append((entry.seq, entry.kind, entry.status))
    for task, result in zip(tasks, results, strict=True):
        assert sorted(steps[task.task_id]) == [
            (0, "run", "completed"),
            (1, "llm", "completed"),
            (2, "step", "completed"),
            (3, "tool", "completed"),
        ]
        drawn = next(e for e in journal if e.task_id == task.task_id and e.seq == 2)
        assert isinstance(result.output, dict)
        assert result.output["lucky"] == drawn.outcome["value"], "the run used the journaled draw"
