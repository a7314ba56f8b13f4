"""OpenTelemetry: one trace per task across services, a span per message and per step.

With tracing on, FastStream's telemetry middleware opens a span for every consumed
message, continuing the trace found in its ``traceparent`` header; with it off, that
header alone becomes the current trace context (`services.trace_context`). Every message a
service writes to its outbox carries the ``traceparent`` of the span that wrote
it (see `outbox.UnitOfWork.publish`), so an agent's run, the tool calls it makes
and the child tasks it delegates are one trace. Each ``ctx`` step is a span of
its own, and every log line carries the trace and span ids.

Tracing is off until a tracer provider is configured: ``BALLAST_TRACING=console``
prints spans, ``BALLAST_TRACING=otlp`` sends them to an OpenTelemetry collector
(Jaeger, Tempo, ...) over OTLP/HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables. Every ``ballast`` command sets this up from its settings.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace

tracer = trace.get_tracer("ballast")


def configure_tracing(mode: str, service_name: str) -> None:
    """Install a tracer provider for the process (``console`` or ``otlp``), or leave it off.

    The provider flushes its batch of spans when the process exits. The SDK is loaded
    only here: with tracing off, a service does not carry it.
    """
    if mode == "off":
        return
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def add_trace_ids(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span ids on every line."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event
