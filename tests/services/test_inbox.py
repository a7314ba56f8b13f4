"""The inbox: a redelivery after the broker's deduplication window is still processed once."""

from __future__ import annotations

import asyncio
from functools import partial

from pydantic import BaseModel

from contracts.subjects import Stream, result_subject, tool_service, tool_subject
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.stream_reader import stored_messages
from services.tools import ToolContext
from tests.helpers import eventually, subject_count, tool_calls_acknowledged, unique
from tests.outbox.conftest import Widget, widget_count
from tests.services.callers import caller_call, publish_call
from tests.services.conftest import Hosts


class Item(BaseModel):
    text: str


class TestAfterDedupWindow:
    async def test_a_call_stored_twice_has_its_effect_once(
        self, own_nats: EmbeddedNats, hosts: Hosts
    ) -> None:
        """With a 0.5 s duplicate window, the same call published 1.5 s apart is stored twice
        by the stream; the tool host runs it once and writes one row."""
        app = Ballast("t")
        runs = 0
        name = unique("writer")

        @app.tool(name)
        async def writer(ctx: ToolContext, args: Item) -> str:
            nonlocal runs
            runs += 1
            ctx.session.add(Widget(name=args.text))
            return "ok"

        host = await hosts.start(own_nats, app.specs, dedup_window_s=0.5)
        client = await hosts.client(own_nats)
        call = caller_call(name, call_id=f"{unique('d')}:1", text=unique("row"))
        await publish_call(client.js, call)
        await asyncio.sleep(1.5)  # let the deduplication window pass
        await publish_call(client.js, call)

        subject = tool_subject(name)
        assert await subject_count(client.js, Stream.TOOLS.value, subject) == 2

        both_consumed = partial(tool_calls_acknowledged, client.js, name, 2)
        await eventually(both_consumed, what="both copies consumed")
        assert await widget_count(host.db, str(call.args["text"])) == 1
        assert runs == 1
        # The repeat was answered with the stored result, not with a second run.
        results = result_subject(call.agent, call.task_id)
        answers = [
            raw.data async for raw in stored_messages(client.js, Stream.RESULTS.value, results)
        ]
        assert len(answers) == 2
        assert answers[0] == answers[1]


class TestLongRuns:
    async def test_a_call_running_past_the_ack_wait_is_delivered_once(
        self, own_nats: EmbeddedNats, hosts: Hosts
    ) -> None:
        """A call that runs for 2.5 times the ack wait reports progress meanwhile: the broker
        does not hand it to another worker, and it runs once."""
        app = Ballast("t")
        runs = 0
        name = unique("slow")

        @app.tool(name)
        async def slow(ctx: ToolContext, args: Item) -> str:
            nonlocal runs
            runs += 1
            await asyncio.sleep(2.5)  # stands in for slow I/O
            return "done"

        await hosts.start(own_nats, app.specs, ack_wait_s=1.0)
        client = await hosts.client(own_nats)
        call = caller_call(name, call_id=f"{unique('l')}:1", text="x")
        await publish_call(client.js, call)

        acknowledged = partial(tool_calls_acknowledged, client.js, name, 1)
        await eventually(acknowledged, what="the call acknowledged")
        info = await client.js.consumer_info(Stream.TOOLS.value, tool_service(name))
        assert info.num_redelivered == 0, "the broker redelivered a call that was still running"
        assert runs == 1
