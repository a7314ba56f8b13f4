"""End-to-end tool calls through a service host in the benchmark's own process.

Calls are published as an agent would (``ballast.tool.<tool>`` with its call id as
``Nats-Msg-Id``); the tool host validates it, checks its inbox, runs a no-op tool,
commits inbox entry and result row, the relay publishes the result, and the
clock stops when the last result is on ``ballast.result.<agent>.<task_id>``. Each
call must have run exactly once (bench.calls checks).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.calls import check_inbox, run_calls
from bench.noop_app import app
from services.embedded import EmbeddedNats
from services.host import ServiceHost
from services.keys import resolve_keys
from services.settings import Settings


async def tool_call_rate(server: EmbeddedNats, database_url: str, calls: int) -> float:
    """Durable tool calls per second, from the first publish to the last result."""
    with tempfile.TemporaryDirectory(prefix="ballast-bench-") as tmp:
        settings = Settings(
            nats_url=server.url, database_url=database_url, data_dir=Path(tmp), log_level="error"
        )
        async with ServiceHost(settings, app.specs, name="bench"):
            result = await run_calls(server, resolve_keys(settings).require_signer(), calls)
    await check_inbox(database_url, calls)
    return result
