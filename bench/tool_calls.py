"""End-to-end tool calls through the service host.

A call is published as an agent would (``ballast.tool.<tool>`` with its call id as
``Nats-Msg-Id``); the tool host validates it, checks its inbox, runs a no-op tool,
commits inbox entry and result row, the relay publishes the result, and the
clock stops when the last result is on ``ballast.result.<agent>.<task_id>``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import nats
from nats.aio.msg import Msg
from pydantic import BaseModel

from bench.common import rate
from bulkheads import PoolConfig
from contracts import Principal, ToolCall
from contracts.subjects import Header, result_subject, tool_subject
from contracts.wire import utc_now
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.host import ServiceHost
from services.identity import sign_principal
from services.keys import resolve_keys
from services.registry import AgentPolicy, AgentRegistry
from services.settings import Settings
from services.tools import ToolContext

POOL = 64
"""Calls the tool host runs at once (and its consumer's max_ack_pending)."""


class Args(BaseModel):
    n: int


def _app(name: str) -> Ballast:
    app = Ballast("bench")

    @app.tool(name, pool=PoolConfig(size=POOL, timeout_s=30))
    async def noop(ctx: ToolContext, args: Args) -> int:
        return args.n

    return app


async def tool_call_rate(server: EmbeddedNats, database_url: str, calls: int) -> float:
    """Durable tool calls per second, from the first publish to the last result."""
    tool = f"noop_{uuid.uuid4().hex[:6]}"
    task_id = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="ballast-bench-") as tmp:
        settings = Settings(
            nats_url=server.url, database_url=database_url, data_dir=Path(tmp), log_level="error"
        )
        async with ServiceHost(settings, _app(tool).specs, name="bench"):
            nc = await nats.connect(server.url)
            js = nc.jetstream(publish_async_max_pending=4000)
            # Calls come from the agent "bench", which may call the tool, for a signed user.
            registry = AgentRegistry(js)
            await registry.start()
            await registry.declare("bench", AgentPolicy(tools=(tool,)))
            signer = resolve_keys(settings).require_signer()
            received = 0
            all_in = asyncio.Event()

            async def on_result(msg: Msg) -> None:
                nonlocal received
                received += 1
                if received == calls:
                    all_in.set()

            await nc.subscribe(result_subject("bench", task_id), cb=on_result)
            principal = Principal(
                user_id="bench", tenant="bench", expires_at=utc_now() + timedelta(hours=1)
            )
            token = sign_principal(principal, signer)
            payloads = [
                ToolCall(
                    call_id=f"{task_id}:{i}",
                    tool=tool,
                    args={"n": i},
                    task_id=task_id,
                    agent="bench",
                    principal=principal,
                )
                .model_dump_json()
                .encode()
                for i in range(calls)
            ]
            started = time.perf_counter()
            acks = [
                await js.publish_async(
                    tool_subject(tool),
                    body,
                    headers={Header.MSG_ID: f"{task_id}:{i}", Header.PRINCIPAL: token},
                )
                for i, body in enumerate(payloads)
            ]
            await asyncio.gather(*acks)
            await asyncio.wait_for(all_in.wait(), timeout=300)
            result = rate(calls, started)
            await nc.close()
    return result
