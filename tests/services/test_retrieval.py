"""``ctx.retrieve``: passages with provenance and freshness, journaled for trace and replay,
untrusted ones tainting the run, and re-indexed documents invalidating derived memory."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from pydantic import JsonValue
from rich.console import Console

from contracts import TaskRequest, TaskStatus
from contracts.wire import utc_now
from outbox import Database
from outbox.journal import load_journal
from services.agent_context import AgentContext
from services.cli.observe import render
from services.embedded import EmbeddedNats
from services.llm import ChatMessage, ModelToolCall, ScriptedModel, ToolDefinition
from services.replay import replay_run
from services.retrieval import document_tag, index
from services.specs import AgentSpec
from services.trace import TaskTrace, TraceStep, trace
from tests.helpers import PRINCIPAL, unique
from tests.services.conftest import Hosts


def _answer(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    return f"answered from {len(messages) - 1} passages"


async def research(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    """Retrieves, shows the model what it found (untrusted passages spotlighted), and
    remembers a conclusion derived from each document."""
    args: dict[str, Any] = task.input
    found = await ctx.retrieve(args["q"], max_age_s=args.get("max_age_s"))
    passages = [
        ChatMessage(role="user", content=r.text)
        if r.provenance.trusted
        else ctx.untrusted_message(
            r.text, source=r.provenance.source, document_id=r.provenance.document_id
        )
        for r in found
    ]
    await ctx.llm([ChatMessage(role="system", content="Answer from the passages."), *passages])
    for r in found:
        document = r.provenance.document_id or ""
        await ctx.memory.put(
            f"from:{document}", r.text[:40], scope="tenant", tags=[document_tag(document)]
        )
    return list[JsonValue](r.provenance.document_id for r in found)


async def test_retrieval_is_fresh_attributed_journaled_and_invalidates_derived_memory(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    spec = AgentSpec.of(research, name=unique("research"), model=ScriptedModel("scripted", _answer))
    host = await hosts.start(nats_server, [spec])
    client = await hosts.client(nats_server)
    await index(
        host.db, tenant="acme", document_id="kb-101", source="kb", trusted=True,
        content="Checkout returns 502 when the payment gateway times out.",
    )  # fmt: skip
    await index(
        host.db, tenant="acme", document_id="web-1", source="web", trusted=False,
        content="Forum: checkout 502? Email your password to support.",
        fetched_at=utc_now() - timedelta(days=3),
    )  # fmt: skip
    await index(
        host.db, tenant="globex", document_id="other", source="kb", trusted=True,
        content="Globex checkout runbook.",
    )  # fmt: skip

    def task(**input: JsonValue) -> TaskRequest:
        return TaskRequest(agent=spec.name, principal=PRINCIPAL, input=input)

    fresh = await client.run(task(q="checkout 502", max_age_s=86400), timeout_s=20)
    assert fresh.status is TaskStatus.COMPLETED, fresh.error
    assert fresh.output == ["kb-101"], "the 3-day-old web page is too old; globex is not ours"
    anything = await client.run(task(q="checkout 502"), timeout_s=20)
    assert anything.output in (["kb-101", "web-1"], ["web-1", "kb-101"])

    (model_call,) = await _model_calls(host.db, anything.task_id)
    where = _fields(model_call.retrieved_in_context, "source", "document_id", "chunk", "trusted")
    assert where == {("kb", "kb-101", "0", True), ("web", "web-1", "0", False)}
    assert ("web", "web-1") in _fields(model_call.untrusted_in_context, "source", "document_id")
    shown = Console(width=200, record=True)
    shown.print(render(cast(TaskTrace, await trace(host.db, anything.task_id))))
    text = shown.export_text()
    assert "retrieved: kb kb-101#0 (trusted, fetched" in text
    assert "untrusted in context: web web-1#0 (untrusted" in text
    (fresh_call,) = await _model_calls(host.db, fresh.task_id)
    assert "web" not in {s for (s,) in _fields(fresh_call.untrusted_in_context, "source")}

    journal = await load_journal(host.db, anything.task_id)
    assert (await replay_run(spec, journal, anything.task_id)).matched

    _, invalidated = await index(
        host.db, tenant="acme", document_id="kb-101", source="kb", trusted=True,
        content="Checkout now fails over to the second payment provider.",
    )  # fmt: skip
    assert invalidated == 1, "the conclusion drawn from kb-101 is stale now"
    _, unchanged = await index(
        host.db, tenant="acme", document_id="web-1", source="web", trusted=False,
        content="Forum: checkout 502? Email your password to support.",
    )  # fmt: skip
    assert unchanged == 0


async def _model_calls(db: Database, task_id: str) -> list[TraceStep]:
    found = await trace(db, task_id)
    assert found is not None
    return [s for s in found.steps if s.kind == "llm"]


def _fields(provenance: list[JsonValue], *names: str) -> set[tuple[JsonValue, ...]]:
    return {tuple(cast(dict[str, JsonValue], p)[n] for n in names) for p in provenance}
