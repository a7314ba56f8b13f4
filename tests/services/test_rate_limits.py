"""Shared rate limits: two agent replicas (separate processes) calling one provider (a
real local OpenAI-compatible server that counts requests) never exceed its requests per
window together, and a 429 with Retry-After quiets every replica for that long."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from contracts import TaskRequest, TaskStatus
from services.embedded import EmbeddedNats
from tests.fake_openai import FakeOpenAI
from tests.helpers import PRINCIPAL
from tests.services.test_crashes import agent_replicas

REQUESTS, WINDOW_S, TASKS = 5, 3.0, 20
THROTTLED, RETRY_AFTER_S = 7, 4


async def test_two_replicas_share_the_limit_and_honour_retry_after(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    fake = FakeOpenAI()
    fake.throttled = {THROTTLED}
    fake.retry_after = str(RETRY_AFTER_S)
    limits = {"limited": {"requests": REQUESTS, "window_s": WINDOW_S}}
    env = {"BALLAST_RATE_LIMITS": json.dumps(limits), "FAKE_OPENAI_URL": fake.base_url}
    with fake.running():
        replicas = agent_replicas(
            "tests.procs.rate_app:asker", own_nats, database_url, tmp_path, **env
        )
        async with replicas as client:
            tasks = [TaskRequest(agent="asker", principal=PRINCIPAL) for _ in range(TASKS)]
            results = await asyncio.gather(*(client.run(t, timeout_s=120) for t in tasks))

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
