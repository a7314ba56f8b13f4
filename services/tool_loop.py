"""The usual agent loop: ask the model, run the tools it asks for, feed the results back.

Tool output that came from untrusted sources goes back into the conversation
spotlighted (marked as data). Refused or failed tool calls go back as errors the
model can read; they never stop the loop by themselves (the loop guard and the
budgets do that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from services.agent_context import AgentContext
from services.errors import TaskFailedError
from services.llm import ChatMessage, ChatReply, ToolDefinition
from services.spotlight import spotlight


async def tool_loop(
    ctx: AgentContext,
    messages: list[ChatMessage],
    tools: Sequence[ToolDefinition],
    *,
    max_turns: int = 8,
) -> ChatReply:
    """Run until the model answers without asking for a tool (or ``max_turns`` model calls)."""
    reply = await ctx.llm(messages, tools=tools)
    for _ in range(max_turns - 1):
        if not reply.tool_calls:
            return reply
        messages.append(
            ChatMessage(role="assistant", content=reply.content or "", tool_calls=reply.tool_calls)
        )
        for call in reply.tool_calls:
            tainted_before = len(ctx.untrusted)
            try:
                content = json.dumps(await ctx.tool(call.name, call.arguments))
            except TaskFailedError as exc:
                content = json.dumps({"error": exc.error.code.value, "message": exc.error.message})
            if len(ctx.untrusted) > tainted_before:
                content = spotlight(content, ctx.untrusted[-1])
            messages.append(ChatMessage(role="tool", content=content, tool_call_id=call.id))
        reply = await ctx.llm(messages, tools=tools)
    return reply
