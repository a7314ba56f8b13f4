"""OpenTelemetry across services, Prometheus metrics and the health endpoint of a host."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, JsonValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bulkheads import PoolConfig, RetryPolicy
from contracts import TaskRequest, TaskStatus
from contracts.subjects import task_subject
from services.agent_context import AgentContext
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.errors import HandlerError
from services.http_server import EmbeddedHttpServer
from services.llm import ChatMessage, ScriptedModel
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, TEST_KEY, eventually, unique
from tests.services.conftest import Hosts
from tests.services.test_cli import aballast, cli_env

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """Every span of the test process, kept in memory (the global provider is set once)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


class Note(BaseModel):
    text: str


def three_services() -> tuple[Ballast, str, str, str]:
    app = Ballast("traced")
    tool, parent, child = unique("note"), unique("boss"), unique("helper")

    @app.tool(tool, pool=PoolConfig(size=3))
    async def note(ctx: ToolContext, args: Note) -> str:
        return args.text.upper()

    @app.agent(parent, tools=(tool,), delegates=(child,))
    async def boss(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        noted = await ctx.tool(tool, {"text": "hello"})
        return await ctx.delegate(child, {"text": noted})

    @app.agent(child, model=ScriptedModel("scripted-research", lambda m, t: "fine"))
    async def helper(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        return (await ctx.llm([ChatMessage(role="user", content="ok?")])).content

    return app, tool, parent, child


def _named(found: list[ReadableSpan], text: str) -> list[ReadableSpan]:
    return [s for s in found if text in s.name]


async def test_agent_tool_and_child_agent_run_is_one_trace(
    hosts: Hosts, nats_server: EmbeddedNats, spans: InMemorySpanExporter
) -> None:
    """The caller's span, the parent agent's message, its tool call, the child agent's
    message and the child's model step all carry one trace id, across three services."""
    app, tool, parent, child = three_services()
    await hosts.start(nats_server, app.specs)
    client = await hosts.client(nats_server)
    task = TaskRequest(agent=parent, principal=PRINCIPAL)
    with trace.get_tracer("test").start_as_current_span("caller") as root:
        await client.submit(task)
    assert (await client.wait(task.task_id, timeout_s=30)).status is TaskStatus.COMPLETED
    trace_id = root.get_span_context().trace_id

    def ours() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

    async def all_ended() -> bool:
        found = ours()
        return all(
            _named(found, text)
            for text in (f"ballast.task.{parent}", f"ballast.tool.{tool}", f"ballast.task.{child}")
        ) and bool(_named(found, "ballast.llm"))

    await eventually(all_ended, timeout_s=10, what="the spans of all three services")
    found = ours()
    assert _named(found, f"ballast.tool {tool}")
    assert _named(found, f"ballast.delegate {child}")
    # Each consumed message is a child of the span that wrote it: one tree, not siblings.
    (tool_message,) = [s for s in _named(found, f"ballast.tool.{tool}") if "process" in s.name]
    (tool_step,) = _named(found, f"ballast.tool {tool}")
    assert tool_message.parent is not None
    parent_span = next(s for s in found if s.context.span_id == tool_message.parent.span_id)
    assert parent_span.context.trace_id == tool_step.context.trace_id
    unrelated = [s for s in spans.get_finished_spans() if s.context.trace_id != trace_id]
    assert not _named(unrelated, f"ballast.task.{child}"), "the child task started no new trace"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_endpoint_counts_messages_pool_dlq_tokens_and_outbox(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    app, tool, parent, child = three_services()
    poison = unique("poison")

    @app.tool(poison, retry=RetryPolicy(max_deliveries=1))
    async def always_fails(ctx: ToolContext, args: Note) -> str:
        raise HandlerError("never works", retryable=False)

    host = await hosts.start(nats_server, app.specs, http_port=0, metrics_interval_s=0.1)
    assert host.http is not None
    client = await hosts.client(nats_server)
    task = TaskRequest(agent=parent, principal=PRINCIPAL)
    await client.submit(task)
    assert (await client.wait(task.task_id, timeout_s=30)).status is TaskStatus.COMPLETED
    await client.js.publish(f"ballast.tool.{poison}", b"not json")

    async with httpx.AsyncClient(base_url=host.http.url) as http:

        async def scraped() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            response = await http.get("/metrics")
            assert response.status_code == 200
            return _samples(response.text)

        async def settled() -> bool:
            now = await scraped()
            dead = now.get(("ballast_dlq_depth", frozenset({("service", f"tool-{poison}")})))
            outbox = (
                now.get(("ballast_outbox_unsent", frozenset())),
                now.get(("ballast_outbox_lag_seconds", frozenset())),
            )
            return dead == 1 and outbox == (0, 0)

        await eventually(settled, timeout_s=10, what="the DLQ depth and an empty outbox, no lag")
        m = await scraped()

    def one(name: str, **labels: str) -> float:
        return m[(name, frozenset(labels.items()))]

    assert one("ballast_messages_total", service=f"agent-{parent}", outcome="acked") == 1
    assert one("ballast_messages_total", service=f"tool-{tool}", outcome="acked") == 1
    assert one("ballast_messages_total", service=f"tool-{poison}", outcome="dead_lettered") == 1
    assert one("ballast_handler_seconds_count", service=f"agent-{child}") == 1
    assert one("ballast_pool_size", service=f"tool-{tool}") == 3
    assert one("ballast_pool_in_use", service=f"tool-{tool}") == 0
    assert one("ballast_consumer_pending", service=f"agent-{parent}") == 0
    assert (
        one("ballast_llm_tokens_total", agent=child, model="scripted-research", direction="input")
        == 1
    )
    assert one("ballast_llm_cost_usd_total", agent=child, model="scripted-research") > 0
    assert one("ballast_outbox_unsent") == 0
    assert one("ballast_outbox_lag_seconds") == 0
    assert one("ballast_relay_published_total") >= 5
    received = [
        value
        for (name, labels), value in m.items()
        if name == "faststream_received_messages_total"
        and ("handler", task_subject(parent)) in labels
    ]
    assert received == [1.0], "FastStream's own middleware counts the consumed task"


async def test_health_reports_each_check_and_turns_unhealthy_without_the_broker(
    hosts: Hosts, own_nats: EmbeddedNats
) -> None:
    app, *_ = three_services()
    host = await hosts.start(own_nats, app.specs, http_port=0)
    assert host.http is not None
    async with httpx.AsyncClient(base_url=host.http.url) as http:
        ok = await http.get("/health")
        assert ok.status_code == 200
        assert ok.json() == {
            "status": "ok",
            "checks": {"broker": "ok", "database": "ok", "relay": "ok"},
        }
        await own_nats.stop()
        try:

            async def unhealthy() -> bool:
                return (await http.get("/health")).status_code == 503

            await eventually(unhealthy, timeout_s=20, what="the health check to notice")
            body = (await http.get("/health")).json()
            assert body["status"] == "unhealthy"
            assert body["checks"]["broker"] == "not connected to NATS"
            assert body["checks"]["database"] == "ok"
        finally:
            await own_nats.start()

        async def healthy_again() -> bool:
            return (await http.get("/health")).status_code == 200

        await eventually(healthy_again, timeout_s=20, what="the host to recover")


async def test_a_cli_publish_exports_its_span_over_otlp_and_the_run_continues_its_trace(
    hosts: Hosts, nats_server: EmbeddedNats, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """``BALLAST_TRACING=otlp`` sends the spans of a ``ballast`` process to a collector;
    the task it publishes runs in another process under the same trace id."""
    posted: list[bytes] = []

    async def collect(request: Request) -> Response:
        posted.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    collector = EmbeddedHttpServer(
        Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])]),
        host="127.0.0.1",
        port=0,
    )
    await collector.start()
    try:
        app, _, parent, _ = three_services()
        await hosts.start(nats_server, app.specs)
        env = cli_env(
            BALLAST_NATS_URL=nats_server.url,
            BALLAST_DATA_DIR=str(tmp_path),
            BALLAST_SIGNING_KEY=TEST_KEY.seed,
            BALLAST_TRACING="otlp",
            BALLAST_SERVICE_NAME="support-desk",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        )
        done = await aballast("publish", parent, "{}", "--wait", env=env)
        assert done.returncode == 0, done.stderr
    finally:
        await collector.stop()

    exported = [ExportTraceServiceRequest.FromString(body) for body in posted]
    submits = [
        (resource.resource, span)
        for request in exported
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
        if span.name == f"ballast.submit {parent}"
    ]
    assert len(submits) == 1, "the publish span reached the collector"
    resource, submit = submits[0]
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "support-desk"
    trace_id = int.from_bytes(submit.trace_id, "big")

    async def run_traced() -> bool:
        runs = _named(list(spans.get_finished_spans()), f"ballast.task.{parent}")
        return any(s.context.trace_id == trace_id for s in runs)

    await eventually(run_traced, what="the agent's span in the publisher's trace")
