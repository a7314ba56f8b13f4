"""The agent of the rate-limit test, run as two ``ballast run`` replicas: one model call
per task, to the OpenAI-compatible test server at ``FAKE_OPENAI_URL``."""

from __future__ import annotations

import os

from pydantic import JsonValue

from bulkheads import PoolConfig, RetryPolicy
from contracts import TaskRequest
from services.agent_context import AgentContext
from services.app import Ballast
from services.llm import ChatMessage
from services.openai_model import OpenAIChatModel

app = Ballast("rates")


@app.agent(
    model=OpenAIChatModel("limited", base_url=os.environ.get("FAKE_OPENAI_URL")),
    pool=PoolConfig(size=16, timeout_s=120),
    retry=RetryPolicy(max_deliveries=10, initial_delay_s=0.1, max_delay_s=1.0),
)
async def asker(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    question = ChatMessage(role="user", content=f"from {os.getpid()}: {task.task_id}")
    return (await ctx.llm([question], max_tokens=16)).content
