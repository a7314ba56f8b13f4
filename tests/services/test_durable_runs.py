"""Durable execution: journaled steps run once, whatever happens to the run."""

from __future__ import annotations

import asyncio
import itertools

from pydantic import BaseModel, JsonValue

from bulkheads import RetryPolicy
from contracts import ErrorCode, TaskRequest, TaskStatus
from outbox.journal import load_journal
from services.agent_context import AgentContext
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.errors import DelegationError, HandlerError, StepFailedError
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, unique
from tests.outbox.conftest import Widget, widget_count
from tests.services.conftest import Hosts

FAST_RETRY = RetryPolicy(max_deliveries=3, initial_delay_s=0.05, max_delay_s=0.1)


class Item(BaseModel):
    text: str


def task_for(agent: str, **values: object) -> TaskRequest:
    return TaskRequest(agent=agent, principal=PRINCIPAL, **values)  # type: ignore[arg-type]


class TestReexecution:
    async def test_a_run_executed_again_takes_recorded_steps_from_the_journal(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """The run crashes after a step and a tool call; its second execution gets both
        outcomes from the journal: the step function and the tool ran once."""
        app = Ballast("t")
        tool, agent = unique("effect"), unique("agent")
        executions = 0
        stamps = itertools.count(100)

        @app.tool(tool)
        async def effect(ctx: ToolContext, args: Item) -> dict[str, JsonValue]:
            ctx.session.add(Widget(name=args.text))
            return {"stored": args.text}

        @app.agent(agent, retry=FAST_RETRY, tools=(tool,))
        async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            nonlocal executions
            executions += 1
            stamp = await ctx.step("stamp", lambda: next(stamps))
            out = await ctx.tool(tool, Item(text=task.task_id))
            if executions == 1:
                raise RuntimeError("the worker dies after the tool call")
            return {"stamp": stamp, "out": out}

        host = await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        task = task_for(agent)
        result = await client.run(task, timeout_s=20)

        assert result.status is TaskStatus.COMPLETED
        assert result.output == {"stamp": 100, "out": {"stored": task.task_id}}
        assert executions == 2
        assert next(stamps) == 101, "the step function ran once"
        assert await widget_count(host.db, task.task_id) == 1
        journal = await load_journal(host.db, task.task_id)
        assert [(e.seq, e.kind, e.name, e.status) for e in journal.values()] == [
            (0, "run", agent, "completed"),
            (1, "step", "stamp", "completed"),
            (2, "tool", tool, "completed"),
        ]

    async def test_parallel_calls_get_keys_in_the_order_they_are_written(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        tools = [unique("t") for _ in range(3)]
        agent = unique("agent")
        for name in tools:

            @app.tool(name)
            async def echo(ctx: ToolContext, args: Item) -> str:
                await asyncio.sleep(0.05 if args.text == "0" else 0)
                return ctx.idempotency_key

        @app.agent(agent, tools=tuple(tools))
        async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            keys = await asyncio.gather(
                *(ctx.tool(name, {"text": str(i)}) for i, name in enumerate(tools))
            )
            return list(keys)

        host = await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        task = task_for(agent)
        result = await client.run(task, timeout_s=20)
        assert result.output == [f"{task.task_id}:{i}" for i in (1, 2, 3)]
        journal = await load_journal(host.db, task.task_id)
        assert [journal[i].name for i in (1, 2, 3)] == tools


class TestNonDeterminism:
    async def test_code_asking_for_another_step_than_journaled_fails_naming_both(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        first, second, agent = unique("first"), unique("second"), unique("agent")
        executions = 0

        for name in (first, second):

            @app.tool(name)
            async def noop(ctx: ToolContext, args: Item) -> str:
                return "ok"

        @app.agent(agent, retry=FAST_RETRY, tools=(first, second))
        async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            nonlocal executions
            executions += 1
            # The deployed code changed between two executions of the same task.
            await ctx.tool(first if executions == 1 else second, {"text": "x"})
            raise RuntimeError("retry me")

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        result = await client.run(task_for(agent), timeout_s=20)
        assert result.status is TaskStatus.FAILED
        assert result.error is not None
        assert result.error.code is ErrorCode.NON_DETERMINISM
        assert f"tool {first!r}" in result.error.message
        assert f"tool {second!r}" in result.error.message
        assert executions == 2


class TestStepsAndChildren:
    async def test_a_step_failing_for_good_is_journaled_and_a_child_failure_reaches_the_parent(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        parent, child = unique("parent"), unique("child")
        calls = 0

        def refuse() -> None:
            nonlocal calls
            calls += 1
            raise HandlerError("the card was declined", retryable=False)

        @app.agent(child, retry=RetryPolicy(max_deliveries=1))
        async def child_run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            if task.input.get("fail"):
                raise HandlerError("child refuses", retryable=False)
            return {"doubled": 2 * int(str(task.input["n"]))}

        @app.agent(parent, delegates=(child,))
        async def parent_run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            try:
                await ctx.step("charge", refuse)
            except StepFailedError as exc:
                declined = exc.error.message
            ok = await ctx.delegate(child, {"n": 21})
            try:
                await ctx.delegate(child, {"fail": True})
            except DelegationError as exc:
                return {"declined": declined, "ok": ok, "child_error": exc.error.message}
            return None

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        result = await client.run(task_for(parent), timeout_s=20)
        assert result.status is TaskStatus.COMPLETED
        assert result.output == {
            "declined": "the card was declined",
            "ok": {"doubled": 42},
            "child_error": "child refuses",
        }
        assert calls == 1
