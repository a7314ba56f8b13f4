"""Trace, task listing, costs and replay, read from the journal of real runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import structlog
from pydantic import BaseModel, JsonValue
from structlog.testing import capture_logs

from contracts import BudgetLimits, TaskRequest, TaskStatus
from contracts.subjects import tool_service
from contracts.wire import utc_now
from outbox.journal import load_journal
from services.agent_context import AgentContext
from services.app import Ballast
from services.budgets import BudgetPolicy
from services.embedded import EmbeddedNats
from services.errors import HandlerError
from services.llm import ChatMessage, ScriptedModel, ToolDefinition
from services.replay import replay_run
from services.specs import AgentSpec
from services.tools import ToolContext
from services.trace import costs, tasks, trace
from tests.helpers import PRINCIPAL, unique
from tests.services.conftest import Hosts


class Query(BaseModel):
    q: str


def _topic(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> str:
    return "refunds"


def _other_topic(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> str:
    return "chargebacks"


def _summary(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> str:
    return "summary of the document"


PLANNER_MODEL = ScriptedModel("scripted-triage", _topic)
WRITER_MODEL = ScriptedModel("scripted-research", _summary)


class Scenario:
    """A planner that asks its model, calls a tool, and delegates to a writer."""

    def __init__(self) -> None:
        self.app = Ballast("observed")
        self.tool, self.planner, self.writer = unique("lookup"), unique("plan"), unique("write")
        self.lookups: list[str] = []
        tool, writer = self.tool, self.writer

        @self.app.tool(tool)
        async def lookup(ctx: ToolContext, args: Query) -> str:
            if args.q == "broken":
                raise HandlerError("the index is corrupt", retryable=False)
            self.lookups.append(args.q)
            return f"the policy on {args.q}"

        caps = BudgetLimits(steps=20, tool_calls=5, cost_usd=Decimal("0.01"))

        @self.app.agent(
            self.planner,
            model=PLANNER_MODEL,
            tools=(tool,),
            delegates=(writer,),
            budget=BudgetPolicy(per_task=caps, per_user_day=BudgetLimits(steps=1000)),
        )
        async def plan(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            reply = await ctx.llm([ChatMessage(role="user", content=str(task.input["ask"]))])
            found = await ctx.tool(tool, {"q": task.input.get("q", reply.content)})
            written = await ctx.delegate(writer, {"text": found})
            return {"topic": reply.content, "written": written}

        @self.app.agent(writer, model=WRITER_MODEL)
        async def write(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            document = ctx.untrusted_message(
                str(task.input["text"]), source="kb", document_id="policy-7", chunk="3"
            )
            reply = await ctx.llm([ChatMessage(role="system", content="summarise"), document])
            return reply.content

    def spec(self, name: str) -> AgentSpec:
        (found,) = [s for s in self.app.specs if isinstance(s, AgentSpec) and s.name == name]
        return found

    def task(self, **input: JsonValue) -> TaskRequest:
        return TaskRequest(
            agent=self.planner, input={"ask": "what is this about?", **input}, principal=PRINCIPAL
        )


async def test_trace_shows_steps_tool_calls_children_provenance_and_budget(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    s = Scenario()
    host = await hosts.start(nats_server, s.app.specs)
    client = await hosts.client(nats_server)
    task = s.task()
    await client.submit(task)
    assert (await client.wait(task.task_id, timeout_s=30)).status is TaskStatus.COMPLETED

    found = await trace(host.db, task.task_id)
    assert found is not None
    assert (found.agent, found.user_id, found.status) == (s.planner, "tester", "completed")
    assert [(st.seq, st.kind, st.name) for st in found.steps] == [
        (1, "llm", "scripted-triage"),
        (2, "tool", s.tool),
        (3, "delegate", s.writer),
    ]
    llm, call, delegation = found.steps
    assert llm.model == "scripted-triage"
    assert llm.input_tokens == 4
    assert llm.output_tokens == 1
    assert llm.cost_usd == Decimal("0.000006")  # 4 in at $1/Mtok, 1 out at $2/Mtok
    assert call.request == {"q": "refunds"}
    assert call.outcome == "the policy on refunds"
    assert call.attempts == 1
    assert call.status == "completed"
    assert [d.verdict for d in call.decisions] == ["allowed"]
    assert all(st.duration_ms is not None and st.duration_ms >= 0 for st in found.steps)

    child = delegation.child
    assert child is not None
    assert child.agent == s.writer
    assert child.status == "completed"
    (written,) = child.steps
    sources = {
        (p["source"], p["document_id"], p["chunk"])  # type: ignore[index,call-overload]
        for p in written.untrusted_in_context
    }
    # The child's input came from another run, so it is untrusted too.
    assert sources == {("kb", "policy-7", "3"), ("task_input", child.task_id, None)}
    spent = {(line.scope.split(":")[0], line.metric): line.spent for line in found.budget}
    assert spent[("task", "tool_calls")] == 1
    assert spent[("task", "steps")] == 3
    assert spent[("task", "cost_usd")] == llm.cost_usd
    assert spent[("user_day", "steps")] == 3, "the user's day counts the same steps"
    assert {line.limit for line in found.budget} == {20, 5, Decimal("0.01"), 1000}
    assert found.cost_usd == llm.cost_usd
    assert found.input_tokens == 4


async def test_tasks_are_listed_by_agent_user_status_and_time_and_costs_grouped(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    s = Scenario()
    host = await hosts.start(nats_server, s.app.specs)
    client = await hosts.client(nats_server)
    good, bad = s.task(), s.task(q="broken")
    for task in (good, bad):
        await client.submit(task)
    assert (await client.wait(good.task_id, timeout_s=30)).status is TaskStatus.COMPLETED
    assert (await client.wait(bad.task_id, timeout_s=30)).status is TaskStatus.FAILED

    mine = await tasks(host.db, agent=s.planner)
    assert {t.task_id for t in mine} == {good.task_id, bad.task_id}
    failed = await tasks(host.db, agent=s.planner, status="failed")
    assert [t.task_id for t in failed] == [bad.task_id]
    assert await tasks(host.db, agent=s.planner, user="somebody-else") == []
    assert await tasks(host.db, agent=s.planner, since=utc_now() + timedelta(minutes=1)) == []
    children = await tasks(host.db, agent=s.writer, user="tester")
    assert len(children) == 1, "only the good task got as far as delegating"

    by_agent = {
        line.key: line
        for line in await costs(host.db, by="agent", since=utc_now() - timedelta(hours=1))
    }
    assert by_agent[s.planner].calls == 2
    assert by_agent[s.planner].cost_usd == Decimal("0.000012")
    assert by_agent[s.writer].calls == 1
    by_model = {
        line.key: line.calls
        for line in await costs(host.db, by="model", since=utc_now() - timedelta(hours=1))
    }
    assert by_model["scripted-triage"] >= 2
    assert by_model["scripted-research"] >= 1


async def test_replay_matches_and_reports_the_first_divergence_after_a_code_change(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    s = Scenario()
    host = await hosts.start(nats_server, s.app.specs)
    client = await hosts.client(nats_server)
    task = s.task()
    await client.submit(task)
    assert (await client.wait(task.task_id, timeout_s=30)).status is TaskStatus.COMPLETED
    journal = await load_journal(host.db, task.task_id)
    planner = s.spec(s.planner)

    report = await replay_run(planner, journal, task.task_id)
    assert report.matched
    assert report.ended == "completed"
    assert (report.steps_matched, report.steps_in_journal) == (3, 3)
    assert report.output == {"topic": "refunds", "written": "summary of the document"}
    assert s.lookups == ["refunds"], "replay runs no tool"

    async def changed(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        reply = await ctx.llm([ChatMessage(role="user", content="what is this about?")])
        await ctx.delegate(s.writer, {"text": reply.content})  # the tool call was dropped
        return None

    report = await replay_run(replace(planner, fn=changed), journal, task.task_id)
    assert not report.matched
    assert report.ended == "diverged"
    assert report.divergence is not None
    assert report.divergence.seq == 2
    assert report.divergence.expected == f"tool {s.tool!r}"
    assert report.divergence.got == f"delegate {s.writer!r}"

    live = await replay_run(
        planner, journal, task.task_id, ScriptedModel("candidate", _other_topic)
    )
    assert not live.matched
    assert live.live_model == "candidate"
    assert [(c.seq, c.recorded, c.live) for c in live.decision_changes] == [
        (1, "refunds", "chargebacks")
    ]
    assert s.lookups == ["refunds"], "a live-model replay never executes a tool"

    def unreachable(messages: object, tools: object) -> str:
        raise ConnectionError("provider down")

    down = await replay_run(planner, journal, task.task_id, ScriptedModel("down", unreachable))
    assert not down.matched
    assert down.ended == "live_model_failed"
    assert down.error is not None
    assert "down failed: ConnectionError: provider down" in down.error


async def test_failed_and_budget_stopped_runs_replay_to_the_same_end(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    s = Scenario()
    capped = unique("capped")

    @s.app.agent(capped, tools=(s.tool,), budget=BudgetPolicy(per_task=BudgetLimits(tool_calls=1)))
    async def twice(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        await ctx.tool(s.tool, {"q": "one"})
        return await ctx.tool(s.tool, {"q": "two"})

    host = await hosts.start(nats_server, s.app.specs)
    client = await hosts.client(nats_server)
    broken = s.task(q="broken")
    stopped = TaskRequest(agent=capped, principal=PRINCIPAL)
    for task in (broken, stopped):
        await client.submit(task)
    assert (await client.wait(broken.task_id, timeout_s=30)).status is TaskStatus.FAILED
    assert (await client.wait(stopped.task_id, timeout_s=30)).status is TaskStatus.BUDGET_EXCEEDED

    report = await replay_run(
        s.spec(s.planner), await load_journal(host.db, broken.task_id), broken.task_id
    )
    assert report.matched
    assert report.ended == "failed"
    assert report.error is not None
    assert "the index is corrupt" in report.error

    report = await replay_run(
        s.spec(capped), await load_journal(host.db, stopped.task_id), stopped.task_id
    )
    assert report.matched
    assert report.ended == "failed"
    assert report.error is not None
    assert "tool_calls" in report.error
    assert (await trace(host.db, stopped.task_id)).status == "budget_exceeded"  # type: ignore[union-attr]


async def test_a_tool_logs_bound_to_its_delivery_and_call(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    """What a tool logs carries the service, message, task and attempt of its delivery
    (bound for the whole delivery) and the tool and call (bound by its context)."""
    app = Ballast("t")
    tool, agent = unique("logged"), unique("caller")
    seen: list[dict[str, object]] = []

    @app.tool(tool)
    async def logged(ctx: ToolContext, args: Query) -> str:
        seen.append(structlog.contextvars.get_contextvars())
        ctx.log.info("tool.looked_up", q=args.q)
        return args.q

    @app.agent(agent, tools=(tool,))
    async def caller(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        return await ctx.tool(tool, {"q": "x"})

    await hosts.start(nats_server, app.specs)
    client = await hosts.client(nats_server)
    task = TaskRequest(agent=agent, principal=PRINCIPAL)
    with capture_logs() as logs:
        assert (await client.run(task, timeout_s=20)).status is TaskStatus.COMPLETED

    [entry] = [e for e in logs if e["event"] == "tool.looked_up"]
    assert entry["tool"] == tool
    [bound] = seen
    assert bound == {
        "service": tool_service(tool),
        "message_id": entry["call_id"],
        "task_id": task.task_id,
        "attempt": 1,
    }
