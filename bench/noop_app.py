"""The no-op tool of the tool-call benchmarks, hosted in the benchmark's process
(bench.tool_calls) or served by processes of its own (``ballast run bench.noop_app:noop``,
bench.processes).
"""

from __future__ import annotations

from pydantic import BaseModel

from bulkheads import PoolConfig
from services.app import Ballast
from services.tools import ToolContext

POOL = 64
"""Calls a host runs at once (and its consumer's max_ack_pending)."""
TARGET = "bench.noop_app:noop"
"""What ``ballast run`` is given to serve the tool alone."""

app = Ballast("bench")


class Args(BaseModel):
    n: int


@app.tool(pool=PoolConfig(size=POOL, timeout_s=30))
async def noop(ctx: ToolContext, args: Args) -> int:
    return args.n
