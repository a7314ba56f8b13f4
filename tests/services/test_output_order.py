"""At low load a delivery's outputs leave before its acknowledgement.

The commit that records a tool's result wakes the relay, but the delivery's ack and
FastStream's exit path run before anything yields: the result would wait for them.
A consumer with nothing else in flight gives the relay its turn first (services.delivery).
"""

from __future__ import annotations

import nats
from nats.aio.msg import Msg

from contracts.subjects import result_subject
from services.embedded import EmbeddedNats
from tests.helpers import eventually, unique
from tests.services.callers import caller_call, publish_call, serve_echo_tool
from tests.services.conftest import Hosts

CALLS = 5


async def test_a_result_is_sent_before_its_call_is_acknowledged(
    own_nats: EmbeddedNats, hosts: Hosts
) -> None:
    name, client = await serve_echo_tool(own_nats, hosts)
    task = unique("task")
    seen: list[str] = []

    async def watch(msg: Msg) -> None:
        seen.append("ack" if msg.subject.startswith("$JS.ACK.") else "result")

    # One connection watches both: the host sends them on one connection, so they
    # arrive here in the order the host sent them.
    watcher = await nats.connect(own_nats.url)
    try:
        await watcher.subscribe("$JS.ACK.>", cb=watch)
        await watcher.subscribe(result_subject("caller", task), cb=watch)
        await watcher.flush()
        for n in range(CALLS):
            await publish_call(client.js, caller_call(name, call_id=f"{task}:{n}"))

            async def answered(count: int = 2 * (n + 1)) -> bool:
                return len(seen) >= count

            await eventually(answered, what=f"the result and the ack of call {n}")
    finally:
        await watcher.close()
    assert seen == ["result", "ack"] * CALLS
