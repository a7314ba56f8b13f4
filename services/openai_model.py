"""A `ChatModel` for any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LiteLLM).

Built on the official ``openai`` SDK (chat completions with tool calling). The
SDK's own retries are off: retries belong to Ballast (redelivery with backoff,
circuit breakers, budgets), not hidden inside a call. Provider errors become
`ModelError` with ``retryable`` set by what the status means: 429, 408, 409 and
5xx, timeouts and connection failures may pass later; other 4xx will not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import openai
from pydantic import JsonValue

from services.errors import ModelError
from services.llm import ChatMessage, ChatReply, ModelToolCall, ToolDefinition, Usage
from services.rate_limits import RateLimitedError

_RETRYABLE_STATUS = {408, 409, 429}


class OpenAIChatModel:
    """Chat completions of ``model`` at ``base_url`` (default: OpenAI's)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._model = model
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, Ollama) accept any key; the SDK insists on one.
            api_key=api_key or "unused",
            timeout=timeout_s,
            max_retries=0,
        )

    @property
    def name(self) -> str:
        return self._model

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        max_tokens: int | None = None,
    ) -> ChatReply:
        request: dict[str, Any] = {
            "model": self._model,
            "messages": [_message(m) for m in messages],
        }
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        try:
            response = await self._client.chat.completions.create(**request)
        except openai.RateLimitError as exc:
            raise RateLimitedError(
                f"{self._model}: provider answered 429: {exc.message}", _retry_after(exc)
            ) from exc
        except openai.APIStatusError as exc:
            retryable = exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
            raise ModelError(
                f"{self._model}: provider answered {exc.status_code}: {exc.message}",
                retryable=retryable,
            ) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ModelError(f"{self._model}: provider unreachable: {exc}", retryable=True) from exc
        return _reply(self._model, response)

    async def close(self) -> None:
        await self._client.close()


def _retry_after(exc: openai.APIStatusError) -> float:
    """The provider's Retry-After (seconds; an HTTP date is not used by providers), or 1 s."""
    try:
        return max(0.0, float(exc.response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _reply(model: str, response: Any) -> ChatReply:
    if not response.choices:
        raise ModelError(f"{model}: the provider returned no choices", retryable=True)
    message = response.choices[0].message
    calls = []
    for call in message.tool_calls or ():
        try:
            arguments: JsonValue = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"{model}: tool call {call.function.name} has arguments that are not JSON",
                retryable=True,
            ) from exc
        if not isinstance(arguments, dict):
            raise ModelError(f"{model}: tool call arguments must be an object", retryable=True)
        calls.append(ModelToolCall(id=call.id, name=call.function.name, arguments=arguments))
    usage = response.usage
    return ChatReply(
        model=response.model or model,
        content=message.content,
        tool_calls=tuple(calls),
        usage=Usage(
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        ),
    )
