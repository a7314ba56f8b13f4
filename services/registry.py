"""The agent registry: each agent's declared tools and delegates, for every tool host to check.

An agent host declares its agents when it starts (NATS KV bucket
``ballast_agents``, one key per agent). Tool hosts read the list of the calling
agent on every call (cached for a few seconds). An agent that declared nothing
may call nothing. In production, NATS permissions let each agent's user write
only its own key (see ``ballast nats-config``).
"""

from __future__ import annotations

import time

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

BUCKET = "ballast_agents"
CACHE_S = 2.0


class AgentPolicy(BaseModel):
    """What an agent may call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: tuple[str, ...] = ()
    delegates: tuple[str, ...] = ()


class AgentRegistry:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        self._cache: dict[str, tuple[float, AgentPolicy | None]] = {}

    async def start(self) -> None:
        try:
            self._kv = await self._js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(bucket=BUCKET, history=1)

    async def declare(self, agent: str, policy: AgentPolicy) -> None:
        assert self._kv is not None, "start the registry first"
        await self._kv.put(agent, policy.model_dump_json().encode())

    async def policy(self, agent: str) -> AgentPolicy | None:
        """The declared policy of ``agent``, or None if it declared none."""
        assert self._kv is not None, "start the registry first"
        now = time.monotonic()
        cached = self._cache.get(agent)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        try:
            entry = await self._kv.get(agent)
            policy = AgentPolicy.model_validate_json(entry.value or b"{}")
        except nats.js.errors.KeyNotFoundError:
            policy = None
        self._cache[agent] = (now, policy)
        return policy
