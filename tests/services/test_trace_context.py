"""A service whose tracing is off still carries its callers' traces on (services.trace_context)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from functools import partial
from pathlib import Path

import nats
from nats.aio.msg import Msg

from contracts.ids import new_id
from contracts.subjects import Stream, result_subject, tool_service
from outbox import sqlite_url
from services.embedded import EmbeddedNats
from tests.helpers import eventually
from tests.services.callers import caller_call, publish_call
from tests.services.test_crashes import ROOT, Service, consumer_ready, service_env

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


async def test_a_service_without_tracing_continues_the_callers_trace(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The call's traceparent is the one its result carries: the tool service, a process
    with no tracer provider, made no span of its own and lost no trace."""
    env = service_env(nats_server.url, sqlite_url(tmp_path / "tool.db"), tmp_path / "data")
    tool = Service("tests.procs.trace_app:shout", env, tmp_path / "tool.log")
    await tool.start()
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        ready = partial(consumer_ready, js, Stream.TOOLS, tool_service("shout"))
        await eventually(ready, timeout_s=30, what="the tool's consumer")
        call = caller_call("shout", call_id=f"{new_id()}:1")
        results: asyncio.Queue[Msg] = asyncio.Queue()
        await nc.subscribe(result_subject(call.agent, call.task_id), cb=results.put)
        traceparent = f"00-{TRACE_ID}-{SPAN_ID}-01"
        await publish_call(js, call, headers={"traceparent": traceparent})
        result = await asyncio.wait_for(results.get(), 30)
    finally:
        await nc.close()
        await tool.stop()
    assert b'"HI"' in result.data
    assert (result.headers or {}).get("traceparent") == traceparent


def test_spans_are_made_only_once_a_tracer_provider_is_installed() -> None:
    """Without a provider a broker gets the trace context alone; with one, FastStream's
    telemetry middleware (a fresh interpreter: this process may have a provider already)."""
    script = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from faststream.nats.opentelemetry import NatsTelemetryMiddleware\n"
        "from services.trace_context import TraceContextMiddleware, consume_tracing\n"
        "before = consume_tracing()\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "after = consume_tracing()\n"
        "print(before is TraceContextMiddleware, isinstance(after, NatsTelemetryMiddleware))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]
