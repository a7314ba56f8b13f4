"""The context bound: what each strategy keeps, what it drops, and that a summary is a
journaled model call of its own."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import JsonValue

from contracts import ErrorCode, TaskRequest, TaskStatus
from outbox.journal import load_journal
from services.agent_context import AgentContext
from services.context_window import ContextPolicy, estimate_tokens, fit
from services.embedded import EmbeddedNats
from services.errors import StepFailedError
from services.llm import ChatMessage, ModelToolCall, ScriptedModel, ToolDefinition
from services.replay import replay_run
from services.specs import AgentSpec
from tests.helpers import PRINCIPAL, unique
from tests.services.conftest import Hosts

WORDS = "word " * 30  # about 54 estimated tokens per turn


def turn(role: str, n: int, **extra: object) -> ChatMessage:
    return ChatMessage(role=role, content=f"turn {n} {WORDS}", **extra)  # type: ignore[arg-type]


CONVERSATION = [
    ChatMessage(role="system", content="You are terse."),
    turn("user", 0),  # the task
    turn("assistant", 1),
    turn("user", 2),
    turn("assistant", 3),
    turn("user", 4),  # the newest
]


def _numbers(messages: Sequence[ChatMessage]) -> list[int]:
    return [int(m.content.split()[1]) for m in messages if m.content.startswith("turn")]


def test_under_the_bound_nothing_changes() -> None:
    fitted = fit(CONVERSATION, ContextPolicy(max_tokens=10_000))
    assert fitted.messages == CONVERSATION
    assert fitted.record is None


def test_drop_oldest_keeps_system_and_newest_and_records_what_it_dropped() -> None:
    bound = sum(estimate_tokens(m) for m in CONVERSATION) - 100
    fitted = fit(CONVERSATION, ContextPolicy(max_tokens=bound))
    assert fitted.messages[0].role == "system"
    assert _numbers(fitted.messages) == [2, 3, 4]
    assert fitted.record is not None
    assert [d["content"].split()[1] for d in fitted.record["dropped"]] == ["0", "1"]
    assert fitted.record["tokens_after"] <= bound


def test_keep_system_and_task_drops_the_middle() -> None:
    bound = sum(estimate_tokens(m) for m in CONVERSATION) - 100
    fitted = fit(CONVERSATION, ContextPolicy(max_tokens=bound, strategy="keep_system_and_task"))
    assert _numbers(fitted.messages) == [0, 3, 4]


def test_a_tool_result_goes_with_the_turn_that_asked_for_it() -> None:
    call = ModelToolCall(id="c1", name="lookup", arguments={"q": "x"})
    messages = [
        turn("user", 0),
        turn("assistant", 1, tool_calls=(call,)),
        turn("tool", 2, tool_call_id="c1"),
        turn("user", 3),
    ]
    bound = estimate_tokens(messages[-1]) + estimate_tokens(messages[2]) + 5
    assert _numbers(fit(messages, ContextPolicy(max_tokens=bound)).messages) == [3]


def test_what_must_stay_over_the_bound_is_refused_not_cut() -> None:
    with pytest.raises(StepFailedError) as refused:
        fit(CONVERSATION, ContextPolicy(max_tokens=20))
    assert refused.value.error.code is ErrorCode.TOO_LARGE


def _brief(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    if messages[0].content.startswith("Summarize"):
        return "they talked about turns 0 and 1"
    return f"saw {len(messages)} messages"


async def chat(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    reply = await ctx.llm(CONVERSATION)
    return reply.content


async def test_summarize_replaces_dropped_turns_by_a_journaled_summary(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    bound = sum(estimate_tokens(m) for m in CONVERSATION) - 80
    spec = AgentSpec.of(
        chat, name=unique("chat"), model=ScriptedModel("scripted", _brief),
        context=ContextPolicy(max_tokens=bound, strategy="summarize", summary_tokens=30),
    )  # fmt: skip
    host = await hosts.start(nats_server, [spec])
    client = await hosts.client(nats_server)
    result = await client.run(TaskRequest(agent=spec.name, principal=PRINCIPAL), timeout_s=20)
    assert result.status is TaskStatus.COMPLETED, result.error
    journal = await load_journal(host.db, result.task_id)
    summary_step, call = (e for e in journal.values() if e.kind == "llm")
    assert summary_step.request["messages"][0]["content"].startswith("Summarize")
    assert "turn 0" in summary_step.request["messages"][1]["content"]
    sent = [m["content"] for m in call.request["messages"]]
    assert sent[1] == "Summary of 2 earlier messages: they talked about turns 0 and 1"
    assert _numbers([ChatMessage(role="user", content=c) for c in sent]) == [2, 3, 4]
    assert [d["content"].split()[1] for d in call.request["trimmed"]["dropped"]] == ["0", "1"]
    assert result.output == "saw 5 messages"
    assert call.request["trimmed"]["tokens_after"] <= bound
    assert sum(estimate_tokens(ChatMessage(role="user", content=c)) for c in sent) <= bound
    assert (await replay_run(spec, journal, result.task_id)).matched
