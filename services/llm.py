"""The model interface agents talk to, and a deterministic scripted model.

Agents call ``ctx.llm(...)``; the host passes the call to the agent's
`ChatModel`. The scripted model answers from a function of the conversation,
so the demo and the tests behave the same on every run and need no network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue

_ANY_OBJECT: dict[str, JsonValue] = {"type": "object"}


class ModelToolCall(BaseModel):
    """A tool call the model asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ModelToolCall, ...] = ()
    """On an assistant turn: the tool calls the model asked for."""
    tool_call_id: str | None = None
    """On a tool turn: the call this is the result of."""


class ToolDefinition(BaseModel):
    """A tool the model may ask for, described by a JSON Schema of its arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, JsonValue] = Field(default_factory=lambda: dict(_ANY_OBJECT))


class Usage(BaseModel):
    """Tokens a model call consumed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)


class ChatReply(BaseModel):
    """What the model answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    content: str | None = None
    tool_calls: tuple[ModelToolCall, ...] = ()
    usage: Usage


class ChatModel(Protocol):
    """Anything that completes a conversation."""

    @property
    def name(self) -> str: ...

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        max_tokens: int | None = None,
    ) -> ChatReply: ...


Script = Callable[[Sequence[ChatMessage], Sequence[ToolDefinition]], "str | list[ModelToolCall]"]
"""A scripted model's brain: the conversation in, the answer text or tool calls out."""


def count_tokens(text: str) -> int:
    """A rough token count (words), enough for a scripted model's usage figures."""
    return len(text.split())


class ScriptedModel:
    """A model whose answer is a pure function of the conversation: deterministic, offline."""

    def __init__(self, name: str, script: Script) -> None:
        self._name = name
        self._script = script

    @property
    def name(self) -> str:
        return self._name

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        max_tokens: int | None = None,
    ) -> ChatReply:
        answer = self._script(messages, tools)
        content, calls = (answer, []) if isinstance(answer, str) else (None, answer)
        spent_out = count_tokens(content or "") + sum(
            count_tokens(json.dumps(c.arguments)) for c in calls
        )
        if max_tokens is not None:
            spent_out = min(spent_out, max_tokens)
        return ChatReply(
            model=self._name,
            content=content,
            tool_calls=tuple(calls),
            usage=Usage(
                input_tokens=sum(count_tokens(m.content) for m in messages),
                output_tokens=spent_out,
            ),
        )
