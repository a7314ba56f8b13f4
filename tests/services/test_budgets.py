"""Budgets: hard caps, reserved before each step, never crossed by concurrent runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial

from pydantic import BaseModel, JsonValue

from bulkheads import PoolConfig
from contracts import BudgetExceeded, BudgetLimits, ErrorCode, Principal, TaskRequest, TaskStatus
from contracts.subjects import Stream, event_subject
from outbox import Database, UnitOfWork
from outbox.budget_ledger import spend
from outbox.journal import StepStatus, record_step
from services.agent_context import AgentContext
from services.app import Ballast
from services.budgets import BudgetPolicy
from services.embedded import EmbeddedNats
from services.llm import ChatMessage, ChatReply, ModelToolCall, ScriptedModel, ToolDefinition, Usage
from services.steps import StepKind, completed
from services.stream_reader import stored_messages
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, unique
from tests.outbox.conftest import Widget, widget_count
from tests.services.conftest import Hosts


class Item(BaseModel):
    text: str


def _answer(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    return "ship it now"


MODEL = ScriptedModel("scripted-triage", _answer)  # priced in the built-in table
NO_TOKENS = Usage(input_tokens=0, output_tokens=0)


async def user_day_ledger(
    db: Database, user: Principal, at: datetime
) -> dict[str, tuple[int, int]]:
    """The ledger of ``user``'s day (tenant acme) that ``at`` falls in: (spent, reserved)
    per metric."""
    async with UnitOfWork(db) as uow:
        return await spend(uow, f"user_day:acme:{user.user_id}:{at.date().isoformat()}")


class TestConcurrentRuns:
    async def test_a_step_another_delivery_recorded_is_neither_reserved_nor_run_again(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """While a delivery runs, another delivery of the same task records its model step
        (as when a claim lapses under load and the broker redelivers). The first one stops
        before reserving budget or calling the model, and its retry replays the recorded
        step: the model is never asked, and nothing stays reserved on the ledger."""
        asked: list[str] = []

        def answer(
            messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
        ) -> str | list[ModelToolCall]:
            asked.append("asked")
            return "asked"

        app = Ballast("t")
        agent = unique("agent")
        overtaken: list[str] = []

        @app.agent(
            agent,
            model=ScriptedModel(MODEL.name, answer),
            budget=BudgetPolicy(per_user_day=BudgetLimits(cost_usd=Decimal("1"))),
            max_tokens=16,
        )
        async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            if not overtaken:  # the other delivery records step 1 while this one runs
                overtaken.append(task.task_id)
                reply = ChatReply(model=MODEL.name, content="recorded", usage=NO_TOKENS)
                async with UnitOfWork(host.db) as uow:
                    record_step(
                        uow, task_id=task.task_id, seq=1, kind=StepKind.LLM.value,
                        name=MODEL.name, request={}, status=StepStatus.COMPLETED,
                        outcome=completed(reply.model_dump(mode="json")),
                    )  # fmt: skip
            return (await ctx.llm([ChatMessage(role="user", content="may I?")])).content

        host = await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        user = Principal(user_id=unique("user"), tenant="acme")
        result = await client.run(TaskRequest(agent=agent, principal=user), timeout_s=30)

        assert result.status is TaskStatus.COMPLETED, result.error
        assert result.output == "recorded"
        assert overtaken == [result.task_id]
        assert asked == []
        ledger = await user_day_ledger(host.db, user, result.finished_at)
        assert all(reserved == 0 for _, reserved in ledger.values()), ledger

    async def test_fifty_concurrent_tasks_of_one_user_never_spend_past_the_daily_cap(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """50 tasks of one user run at once (pool of 50), each one model call and one tool
        call, against a daily cap of 20 tool calls and $0.002: the ledger and the tool's own
        table stay within the caps, nothing stays reserved, and the refused tasks end
        budget_exceeded with an event."""
        app = Ballast("t")
        tool, agent = unique("spend"), unique("agent")
        caps = BudgetLimits(tool_calls=20, cost_usd=Decimal("0.002"))

        @app.tool(tool, pool=PoolConfig(size=16, timeout_s=10))
        async def spend_tool(ctx: ToolContext, args: Item) -> str:
            ctx.session.add(Widget(name=args.text))
            return "spent"

        @app.agent(
            agent,
            model=MODEL,
            pool=PoolConfig(size=50, timeout_s=60),
            budget=BudgetPolicy(per_user_day=caps),
            tools=(tool,),
            max_tokens=16,
        )
        async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            reply = await ctx.llm([ChatMessage(role="user", content="may I spend?")])
            return await ctx.tool(tool, {"text": f"{task.task_id} {reply.content}"})

        host = await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        user = Principal(user_id=unique("user"), tenant="acme")
        tasks = [TaskRequest(agent=agent, principal=user) for _ in range(50)]
        for task in tasks:
            await client.submit(task)
        results = await asyncio.gather(*(client.wait(t.task_id, timeout_s=60) for t in tasks))

        statuses = [r.status for r in results]
        completed = statuses.count(TaskStatus.COMPLETED)
        refused = statuses.count(TaskStatus.BUDGET_EXCEEDED)
        assert completed + refused == 50
        assert refused > 0, "the caps must actually bite for this test to mean anything"
        assert await widget_count(host.db) == completed <= 20

        ledger = await user_day_ledger(host.db, user, results[0].finished_at)
        assert ledger["tool_calls"][0] == completed
        assert ledger["cost_usd"][0] <= 2000  # micro-dollars
        assert all(reserved == 0 for _, reserved in ledger.values()), ledger

        ours = {t.task_id for t in tasks}
        events = [
            BudgetExceeded.model_validate_json(raw.data or b"")
            async for raw in stored_messages(
                client.js, Stream.EVENTS.value, event_subject("budget", "exceeded")
            )
        ]
        mine = [e for e in events if e.task_id in ours]
        assert len(mine) == refused
        assert {e.scope.value for e in mine} == {"user_day"}
        for result in results:
            if result.status is TaskStatus.BUDGET_EXCEEDED:
                assert result.error is not None
                assert result.error.code is ErrorCode.BUDGET_EXCEEDED
                assert result.error.details["scope"] == "user_day"


class TestTaskCaps:
    async def test_a_task_can_lower_its_cap_and_is_stopped_at_the_step_past_it(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        agent = unique("agent")
        ran: list[int] = []

        @app.agent(agent, budget=BudgetPolicy(per_task=BudgetLimits(steps=10)))
        async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            for i in range(5):
                ran.append(int(str(await ctx.step(f"s{i}", partial(int, i)))))
            return "never"

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        lowered = TaskRequest(agent=agent, principal=PRINCIPAL, budget=BudgetLimits(steps=2))
        result = await client.run(lowered, timeout_s=20)
        assert result.status is TaskStatus.BUDGET_EXCEEDED
        assert ran == [0, 1]
        assert result.error is not None
        details = result.error.details
        assert (details["scope"], details["metric"]) == ("task", "steps")
        assert Decimal(str(details["limit"])) == 2
        assert Decimal(str(details["spent"])) == 2
