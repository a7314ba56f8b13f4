"""The OpenAI-compatible adapter against a real local HTTP server speaking the protocol."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import JsonValue

from contracts import TaskRequest, TaskStatus
from services.agent_context import AgentContext
from services.embedded import EmbeddedNats
from services.embedded import free_port as unused_port
from services.errors import ModelError
from services.llm import ChatMessage, ToolDefinition
from services.openai_model import OpenAIChatModel
from services.specs import AgentSpec
from tests.fake_openai import FakeOpenAI
from tests.helpers import PRINCIPAL, unique
from tests.services.conftest import Hosts

SEARCH = ToolDefinition(
    name="search",
    description="Search the docs",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}},
)


@pytest.fixture
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running() as fake:
        yield fake


class TestCompletions:
    async def test_a_tool_call_round_trip(self, provider: FakeOpenAI) -> None:
        """The model asks for a tool; its answer goes back with the call id; usage is read."""
        model = OpenAIChatModel("tool-user", base_url=provider.base_url, api_key="sk-test")
        question = ChatMessage(role="user", content="why 502")
        first = await model.complete([question], tools=[SEARCH], max_tokens=50)
        assert first.content is None
        (call,) = first.tool_calls
        assert call.name == "search"
        assert call.arguments == {"query": "why 502"}
        assert first.usage.input_tokens == 2
        assert first.usage.output_tokens == 7

        second = await model.complete(
            [
                question,
                ChatMessage(role="assistant", content="", tool_calls=first.tool_calls),
                ChatMessage(role="tool", content="gateway timeout", tool_call_id=call.id),
            ],
            tools=[SEARCH],
        )
        assert second.content == "done: gateway timeout"
        assert second.tool_calls == ()
        sent = provider.requests[1]["messages"]
        assert sent[1]["tool_calls"][0]["function"] == {
            "name": "search",
            "arguments": '{"query": "why 502"}',
        }
        assert sent[2] == {"role": "tool", "content": "gateway timeout", "tool_call_id": call.id}
        assert provider.requests[0]["max_tokens"] == 50
        assert provider.requests[0]["tools"][0]["function"]["name"] == "search"
        await model.close()


class TestProviderErrors:
    @pytest.mark.parametrize(
        ("status", "retryable"), [(429, True), (500, True), (503, True), (400, False), (401, False)]
    )
    async def test_status_codes_map_to_retryable_or_not(
        self, provider: FakeOpenAI, status: int, retryable: bool
    ) -> None:
        model = OpenAIChatModel(f"status-{status}", base_url=provider.base_url)
        with pytest.raises(ModelError, match=str(status)) as caught:
            await model.complete([ChatMessage(role="user", content="hi")])
        assert caught.value.retryable is retryable
        assert len(provider.requests) == 1, "the SDK does not retry behind Ballast's back"
        await model.close()

    async def test_an_unreachable_provider_is_retryable(self) -> None:
        model = OpenAIChatModel("any", base_url=f"http://127.0.0.1:{unused_port()}/v1")
        with pytest.raises(ModelError, match="unreachable") as caught:
            await model.complete([ChatMessage(role="user", content="hi")])
        assert caught.value.retryable
        await model.close()


async def test_an_agent_waits_out_a_429_of_a_model_without_a_configured_limit(
    provider: FakeOpenAI, hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    """The provider's Retry-After is honoured even when no rate limit names the model."""
    provider.throttled = {1}
    provider.retry_after = "0.2"
    model = OpenAIChatModel("unlimited", base_url=provider.base_url)

    async def ask(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        return (await ctx.llm([ChatMessage(role="user", content="hi")])).content

    spec = AgentSpec.of(ask, name=unique("ask"), model=model)
    await hosts.start(nats_server, [spec])
    client = await hosts.client(nats_server)
    result = await client.run(TaskRequest(agent=spec.name, principal=PRINCIPAL), timeout_s=20)
    assert result.status is TaskStatus.COMPLETED, result.error
    assert result.output == "done: hi"
    assert len(provider.requests) == 2
    assert provider.arrivals[1] - provider.arrivals[0] >= 0.2
    await model.close()
