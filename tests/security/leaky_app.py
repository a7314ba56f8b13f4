"""An agent and tools that handle a secret carelessly, to prove it never lands in logs,
journals or dead letters."""

from __future__ import annotations

import os

from pydantic import BaseModel, JsonValue

from bulkheads import RetryPolicy
from contracts import TaskRequest
from services.agent_context import AgentContext
from services.app import Ballast
from services.errors import HandlerError
from services.tools import ToolContext

app = Ballast("leaky")


class Key(BaseModel):
    key: str


@app.tool()
async def echo_secret(ctx: ToolContext, args: Key) -> JsonValue:
    ctx.log.info("tool.got_key", key=args.key)
    return {"echo": args.key}


@app.tool(retry=RetryPolicy(max_deliveries=1))
async def reject_secret(ctx: ToolContext, args: Key) -> JsonValue:
    raise HandlerError(f"key {args.key} was rejected by the bank", retryable=False)


@app.agent(tools=("echo_secret", "reject_secret"), retry=RetryPolicy(max_deliveries=1))
async def leaky(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    secret = await ctx.step("read_key", lambda: os.environ["LEAKY_KEY"])
    api_key = await ctx.step("read_api_key", lambda: os.environ["LEAKY_API_KEY"])
    ctx.log.info("agent.read_keys", secret=secret, api_key=api_key)
    await ctx.tool("echo_secret", {"key": str(secret)})
    return await ctx.tool("reject_secret", {"key": f"{secret} {api_key}"})
