"""Guards of a run: the loop guard, and sagas that undo completed steps when a task fails."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, JsonValue

from bulkheads import LoopGuardPolicy, RetryPolicy
from contracts import BudgetLimits, ErrorCode, TaskRequest, TaskStatus
from contracts.subjects import agent_service
from outbox.journal import load_journal
from services.agent_context import AgentContext
from services.app import Ballast
from services.budgets import BudgetPolicy
from services.dead_letters import dead_letter_counts, dead_letters, redrive
from services.embedded import EmbeddedNats
from services.errors import HandlerError, ToolCallError
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, eventually, unique
from tests.services.conftest import Hosts


class Query(BaseModel):
    q: str


class TestLoopGuard:
    async def test_the_same_call_repeated_past_the_limit_stops_the_task(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        tool, agent = unique("search"), unique("agent")
        runs = 0

        @app.tool(tool)
        async def search(ctx: ToolContext, args: Query) -> str:
            nonlocal runs
            runs += 1
            return "nothing found"

        @app.agent(agent, loop_guard=LoopGuardPolicy(max_identical_calls=3), tools=(tool,))
        async def stuck(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            while True:  # a model that keeps asking the same thing
                await ctx.tool(tool, {"q": "same"})

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        result = await client.run(TaskRequest(agent=agent, principal=PRINCIPAL), timeout_s=20)
        assert result.status is TaskStatus.FAILED
        assert result.error is not None
        assert result.error.code is ErrorCode.LOOP_DETECTED
        assert "more than 3 times" in result.error.message
        assert runs == 3
        assert agent_service(agent) not in await dead_letter_counts(client.js)

    async def test_consecutive_failures_stop_the_task(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        tool, agent = unique("flaky"), unique("agent")

        @app.tool(tool)
        async def broken(ctx: ToolContext, args: Query) -> str:
            raise HandlerError("no such record", retryable=False)

        @app.agent(agent, loop_guard=LoopGuardPolicy(max_consecutive_failures=2), tools=(tool,))
        async def persistent(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            for attempt in range(10):
                try:
                    return await ctx.tool(tool, {"q": f"variant {attempt}"})
                except ToolCallError:
                    continue
            return None

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        result = await client.run(TaskRequest(agent=agent, principal=PRINCIPAL), timeout_s=20)
        assert result.error is not None
        assert result.error.code is ErrorCode.LOOP_DETECTED
        assert "more than 2 steps failed in a row" in result.error.message


class Booking(BaseModel):
    ref: str


def booking_app(ran: Counter[str], *, budget: BudgetPolicy | None = None) -> tuple[Ballast, str]:
    """Reserve a room, charge a card, ship; each of the first two can be undone."""
    app = Ballast("t")
    agent = unique("travel")

    @app.tool("reserve_room")
    async def reserve_room(ctx: ToolContext, args: Booking) -> JsonValue:
        ran["reserve_room"] += 1
        return {"booking": f"B-{args.ref}"}

    @app.tool("cancel_room")
    async def cancel_room(ctx: ToolContext, args: Booking) -> JsonValue:
        ran[f"cancel_room {args.ref}"] += 1
        return "cancelled"

    @app.tool("charge")
    async def charge(ctx: ToolContext, args: Booking) -> JsonValue:
        ran["charge"] += 1
        return {"charge": f"C-{args.ref}"}

    @app.tool("refund")
    async def refund(ctx: ToolContext, args: Booking) -> JsonValue:
        ran[f"refund {args.ref}"] += 1
        return "refunded"

    @app.tool("ship", retry=RetryPolicy(max_deliveries=1))
    async def ship(ctx: ToolContext, args: Booking) -> JsonValue:
        ran["ship"] += 1
        raise HandlerError("warehouse closed", retryable=False)

    @app.agent(
        agent,
        retry=RetryPolicy(max_deliveries=1),
        budget=budget,
        tools=("reserve_room", "cancel_room", "charge", "refund", "ship"),
    )
    async def travel(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        room = await ctx.tool(
            "reserve_room",
            {"ref": task.task_id},
            compensate=lambda out: ("cancel_room", {"ref": out["booking"]}),  # type: ignore[call-overload,index]
        )
        paid = await ctx.tool(
            "charge",
            {"ref": task.task_id},
            compensate=lambda out: ("refund", {"ref": out["charge"]}),  # type: ignore[call-overload,index]
        )
        await ctx.tool("ship", {"ref": task.task_id})
        return {"room": room, "paid": paid}

    return app, agent


class TestSagas:
    async def test_a_failed_task_undoes_its_completed_steps_newest_first_once(
        self, own_nats: EmbeddedNats, hosts: Hosts
    ) -> None:
        """Shipping fails for good: the charge is refunded, then the room cancelled; the result
        lists both. Redriving the task replays the failure and its compensations from the
        journal: nothing is refunded or cancelled twice."""
        ran: Counter[str] = Counter()
        app, agent = booking_app(ran)
        host = await hosts.start(own_nats, app.specs)
        client = await hosts.client(own_nats)
        task = TaskRequest(agent=agent, principal=PRINCIPAL)
        result = await client.run(task, timeout_s=20)

        assert result.status is TaskStatus.FAILED
        assert [(c.tool, c.step_key, c.ok) for c in result.compensations] == [
            ("refund", f"{task.task_id}:2", True),
            ("cancel_room", f"{task.task_id}:1", True),
        ]
        expected = Counter(
            {
                "reserve_room": 1,
                "charge": 1,
                "ship": 1,
                f"refund C-{task.task_id}": 1,
                f"cancel_room B-{task.task_id}": 1,
            }
        )
        assert ran == expected
        journal = await load_journal(host.db, task.task_id)
        compensations = sorted((e for e in journal.values() if e.seq < 0), key=lambda e: -e.seq)
        assert [(e.seq, e.name) for e in compensations] == [
            (-1, "refund"),
            (-2, "cancel_room"),
        ]

        (letter,) = [d async for d in dead_letters(client.js, agent_service(agent))]
        await redrive(client.js, letter)
        await eventually(
            lambda: _dead(client, agent_service(agent)), what="the redriven task to fail again"
        )
        assert ran == expected, "the replay ran nothing again"

    async def test_a_task_stopped_by_its_budget_is_compensated_too(
        self, own_nats: EmbeddedNats, hosts: Hosts
    ) -> None:
        ran: Counter[str] = Counter()
        app, agent = booking_app(ran, budget=BudgetPolicy(per_task=BudgetLimits(tool_calls=2)))
        await hosts.start(own_nats, app.specs)
        client = await hosts.client(own_nats)
        task = TaskRequest(agent=agent, principal=PRINCIPAL)
        result = await client.run(task, timeout_s=20)
        assert result.status is TaskStatus.BUDGET_EXCEEDED
        assert [c.tool for c in result.compensations] == ["refund", "cancel_room"]
        assert ran["ship"] == 0


async def _dead(client: object, service: str) -> bool:
    return (await dead_letter_counts(client.js)).get(service, 0) == 1  # type: ignore[attr-defined]
