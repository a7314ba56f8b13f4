"""Shared rate limits: two agent replicas (separate processes) calling one provider (a
real local OpenAI-compatible server that counts requests) never exceed its requests per
window together, and a 429 with Retry-After quiets every replica for that long."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path

from contracts import TaskRequest, TaskStatus
from contracts.subjects import Stream
from services.client import BallastClient
from services.embedded import EmbeddedNats
from tests.fake_openai import FakeOpenAI
from tests.helpers import PRINCIPAL, TEST_KEY, eventually
from tests.services.test_crashes import Service, consumer_ready, service_env

REQUESTS, WINDOW_S, TASKS = 5, 3.0, 20
THROTTLED, RETRY_AFTER_S = 7, 4


async def test_two_replicas_share_the_limit_and_honour_retry_after(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    fake.throttled = {THROTTLED}
    fake.retry_after = str(RETRY_AFTER_S)
    limits = {"limited": {"requests": REQUESTS, "window_s": WINDOW_S}}
    with fake.running():
        replicas = [
            Service(
                "tests.procs.rate_app:asker",
                service_env(own_nats.url, database_url, tmp_path / f"replica-{i}")
                | {"BALLAST_RATE_LIMITS": json.dumps(limits), "FAKE_OPENAI_URL": fake.base_url},
                tmp_path / f"replica-{i}.log",
            )
            for i in (1, 2)
        ]
        for replica in replicas:
            await replica.start()
        try:
            async with BallastClient(own_nats.url, signer=TEST_KEY) as client:
                ready = partial(consumer_ready, client.js, Stream.TASKS, "agent-asker")
                await eventually(ready, timeout_s=30, what="the agent to start")
                tasks = [TaskRequest(agent="asker", principal=PRINCIPAL) for _ in range(TASKS)]
                results = await asyncio.gather(*(client.run(t, timeout_s=120) for t in tasks))
        finally:
            for replica in replicas:
                await replica.stop()

    assert all(r.status is TaskStatus.COMPLETED for r in results), [r.error for r in results]
    arrivals = sorted(fake.arrivals)
    assert len(arrivals) == TASKS + 1, "every task once, and the throttled call again"
    busiest = max(sum(1 for b in arrivals if a <= b < a + WINDOW_S) for a in arrivals)
    assert busiest <= REQUESTS, f"{busiest} requests within {WINDOW_S} s"
    senders = {r["messages"][0]["content"].split()[1] for r in fake.requests}
    assert len(senders) == 2, "both replicas called the provider"
    throttled_at = fake.arrivals[THROTTLED - 1]
    quiet = [
        b - throttled_at
        for b in arrivals
        if throttled_at + 0.3 < b < throttled_at + RETRY_AFTER_S - 0.1
    ]
    assert quiet == [], f"requests during the provider's Retry-After: {quiet}"
