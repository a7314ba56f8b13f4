"""The agent of the session isolation test, run as two ``ballast run`` replicas.

Each task brings one fact of its session. The agent builds its prompt from the
session's conversation and the session's memory, adds the new fact, asks its
model, then remembers the fact and extends the conversation. Every prompt is
journaled, so the test can check that no fact ever reaches another user's or
another session's prompt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pydantic import JsonValue

from bulkheads import PoolConfig, RetryPolicy
from contracts import TaskRequest
from services.agent_context import AgentContext
from services.app import Ballast
from services.llm import ChatMessage, ModelToolCall, ScriptedModel, ToolDefinition

app = Ballast("sessions")


def _echo(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    return f"noted: {messages[-1].content}"


@app.agent(
    model=ScriptedModel("scripted-chat", _echo),
    pool=PoolConfig(size=16, timeout_s=60),
    retry=RetryPolicy(max_deliveries=10, initial_delay_s=0.1, max_delay_s=1.0),
)
async def chat(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    await ctx.step("served by", os.getpid)  # which replica ran it
    history = await ctx.conversation.history()
    remembered = await ctx.memory.list(scope="session")
    fact = str(task.input["fact"])
    known = " ".join(str(e.value) for e in remembered)
    said = ChatMessage(role="user", content=f"I know: {known}. New: {fact}")
    reply = await ctx.llm([ChatMessage(role="system", content="Be brief."), *history, said])
    await ctx.memory.put(f"fact:{task.task_id}", fact, scope="session", tags=["chat"])
    await ctx.conversation.append(said, ChatMessage(role="assistant", content=reply.content or ""))
    return reply.content
