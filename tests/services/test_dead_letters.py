"""Retries with backoff, dead letters, poison messages and redrive, on a real broker."""

from __future__ import annotations

import itertools
import json
import time

from nats.js import JetStreamContext
from pydantic import BaseModel, JsonValue
from structlog.testing import capture_logs

from bulkheads import RetryPolicy
from contracts import ErrorCode, TaskRequest, TaskStatus, ToolCall, ToolResult, ToolStatus
from contracts.subjects import Stream, result_subject, tool_service, tool_subject
from services.agent_context import AgentContext
from services.app import Ballast
from services.dead_letters import dead_letter_counts, dead_letters, redrive
from services.embedded import EmbeddedNats
from services.errors import HandlerError
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, eventually, subject_count, unique
from tests.outbox.conftest import Widget, widget_count
from tests.services.callers import caller_call, publish_call
from tests.services.conftest import Hosts


class Note(BaseModel):
    text: str


class TestRetryThenDeadLetter:
    async def test_retryable_failure_is_retried_with_backoff_then_dead_lettered(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """A tool that always fails is delivered max_deliveries times, each retry no sooner than
        its drawn backoff; then its call is dead-lettered with the error and the agent that
        called it fails with that error."""
        app = Ballast("t")
        attempts: list[float] = []
        tool_name, agent_name = unique("flaky"), unique("caller")

        @app.tool(
            tool_name,
            retry=RetryPolicy(max_deliveries=3, initial_delay_s=0.4, multiplier=2.0),
        )
        async def flaky(ctx: ToolContext, args: Note) -> None:
            attempts.append(time.monotonic())
            raise RuntimeError("upstream is down")

        @app.agent(agent_name, retry=RetryPolicy(max_deliveries=1), tools=(tool_name,))
        async def caller(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            return await ctx.tool(tool_name, {"text": "x"})

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        with capture_logs() as logs:
            result = await client.run(
                TaskRequest(agent=agent_name, principal=PRINCIPAL), timeout_s=20
            )

        assert result.status is TaskStatus.FAILED
        assert result.error is not None
        assert "upstream is down" in result.error.message
        assert len(attempts) == 3
        delays = [e["delay_s"] for e in logs if e["event"] == "delivery.retry_scheduled"]
        assert len(delays) == 2
        for gap, delay, cap in zip(
            (b - a for a, b in itertools.pairwise(attempts)),
            delays,
            (0.4, 0.8),
            strict=True,
        ):
            assert delay <= cap
            assert gap >= delay - 0.01, "redelivered before its backoff"

        letters = [d async for d in dead_letters(client.js, tool_service(tool_name))]
        assert len(letters) == 1
        letter = letters[0].letter
        assert letter.attempts == 3
        assert letter.error.code is ErrorCode.HANDLER_ERROR
        assert letter.error.message == "upstream is down"
        assert letter.first_failure_at < letter.last_failure_at
        assert ToolCall.model_validate_json(letter.original_payload()).tool == tool_name


class TestPoisonMessages:
    async def test_unparseable_and_invalid_messages_go_to_the_dlq_at_once(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """Not JSON, a schema violation, or bad arguments: dead-lettered on the first delivery,
        the tool never runs."""
        app = Ballast("t")
        runs = 0
        tool_name = unique("strict")

        @app.tool(tool_name, retry=RetryPolicy(max_deliveries=5))
        async def strict(ctx: ToolContext, args: Note) -> str:
            nonlocal runs
            runs += 1
            return args.text

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        subject = tool_subject(tool_name)
        task_id = unique("p")
        good = caller_call(tool_name, call_id=f"{task_id}:1")
        schema_violation = good.model_dump(mode="json") | {"surprise": True}
        bad_args = good.model_copy(update={"call_id": f"{task_id}:2", "args": {"txt": 1}})
        await client.js.publish(subject, b"\xff not json")
        await client.js.publish(subject, json.dumps(schema_violation).encode())
        await publish_call(client.js, bad_args)

        service = tool_service(tool_name)
        await eventually(
            lambda: _counted(client.js, service, 3), what="three dead letters", timeout_s=10
        )
        letters = [d.letter async for d in dead_letters(client.js, service)]
        assert [d.attempts for d in letters] == [1, 1, 1]
        assert {d.error.code for d in letters} == {ErrorCode.INVALID_MESSAGE}
        # Handled concurrently, so in any order.
        (binary,) = [d for d in letters if d.payload_encoding == "base64"]
        assert binary.original_payload() == b"\xff not json"
        assert runs == 0
        # The caller of the call with bad arguments is told, the others cannot be identified.
        answered = await client.js.get_last_msg(
            Stream.RESULTS.value, result_subject("caller", task_id)
        )
        assert answered.data is not None
        answer = ToolResult.model_validate_json(answered.data)
        assert answer.call_id == bad_args.call_id
        assert answer.status is ToolStatus.ERROR
        assert answer.error is not None
        assert answer.error.code is ErrorCode.INVALID_MESSAGE


async def _counted(js: JetStreamContext, service: str, n: int) -> bool:
    counts = await dead_letter_counts(js)
    return counts.get(service, 0) == n


class TestRedrive:
    async def test_redrive_after_the_fault_is_fixed_runs_the_call_once(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """A call dead-lettered while its tool was broken succeeds when redriven after the fix;
        redriving it a second time changes nothing (the inbox knows it)."""
        app = Ballast("t")
        broken = True
        tool_name = unique("fragile")

        @app.tool(tool_name, retry=RetryPolicy(max_deliveries=2, initial_delay_s=0.05))
        async def fragile(ctx: ToolContext, args: Note) -> str:
            if broken:
                raise HandlerError("config missing", retryable=False)
            ctx.session.add(Widget(name=args.text))
            return "stored"

        host = await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        call = caller_call(tool_name, call_id=f"{unique('r')}:1", text="w1")
        await publish_call(client.js, call)
        service = tool_service(tool_name)
        await eventually(lambda: _counted(client.js, service, 1), what="a dead letter")
        (stored,) = [d async for d in dead_letters(client.js, service)]
        assert stored.letter.attempts == 1, "a non-retryable error is not retried"

        broken = False
        await redrive(client.js, stored)
        results = result_subject(call.agent, call.task_id)
        await eventually(lambda: _has(client.js, results, 2), what="the redriven call's result")
        assert service not in await dead_letter_counts(client.js), "a redriven letter is removed"
        raw = await client.js.get_last_msg(Stream.RESULTS.value, results)
        assert raw.data is not None
        assert ToolResult.model_validate_json(raw.data).status is ToolStatus.OK

        # The same call again, as a re-executed agent would send it after the dedup window.
        await publish_call(client.js, call, message_id=f"{call.call_id}:again")
        await eventually(
            lambda: _consumer_idle(client.js, service), what="the repeat to be consumed"
        )
        assert await widget_count(host.db, "w1") == 1


async def _has(js: JetStreamContext, subject: str, n: int) -> bool:
    return await subject_count(js, Stream.RESULTS.value, subject) == n


async def _consumer_idle(js: JetStreamContext, consumer: str) -> bool:
    info = await js.consumer_info(Stream.TOOLS.value, consumer)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)
