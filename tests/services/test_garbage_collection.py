"""What a service leaves to the garbage collector.

A message caught in a reference cycle outlives its delivery until a collection finds it:
under load it is promoted through the collector's generations with its body and headers,
and their collections scan it again and again. A started host sets the collector up for
the objects that calls in flight keep alive (services.host.YOUNG_GENERATION).
"""

from __future__ import annotations

import gc
from functools import partial

from faststream.nats.message import NatsMessage

from services.embedded import EmbeddedNats
from services.host import YOUNG_GENERATION
from tests.helpers import eventually, tool_calls_acknowledged, unique
from tests.services.callers import caller_call, echo_tool, publish_call, serve_echo_tool
from tests.services.conftest import Hosts

CALLS = 20


async def test_delivered_messages_leave_no_reference_cycle(
    own_nats: EmbeddedNats, hosts: Hosts
) -> None:
    name, client = await serve_echo_tool(own_nats, hosts)

    all_acknowledged = partial(tool_calls_acknowledged, client.js, name, CALLS)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays for a look
    try:
        for n in range(CALLS):
            await publish_call(client.js, caller_call(name, call_id=f"{unique('m')}:{n}"))
        await eventually(all_acknowledged, what=f"{CALLS} calls acknowledged")
        gc.collect()
        in_cycles = sum(isinstance(o, NatsMessage) for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert in_cycles == 0, f"{in_cycles} delivered messages were freed only by the collector"


async def test_a_started_host_freezes_what_starting_made_and_collects_young_objects_less_often(
    own_nats: EmbeddedNats, hosts: Hosts
) -> None:
    app, _ = echo_tool()
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])  # Python's default, whatever hosts started before
    gc.unfreeze()
    try:
        await hosts.start(own_nats, app.specs)
        assert gc.get_threshold() == (YOUNG_GENERATION, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
