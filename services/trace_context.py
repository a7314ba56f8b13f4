"""Which tracing a service's broker does for each message it consumes.

With a tracer provider installed (``BALLAST_TRACING``, or your own before the service
starts), FastStream's telemetry middleware opens a span for every consumed message,
continuing the trace of its ``traceparent``. Without one, OpenTelemetry's API records
nothing, yet that middleware still builds a span, its attributes and its metrics for
every message: about a tenth of the CPU of a durable tool call (bench/README.md, "What
changed the figures"). All a service without tracing must still do is carry the
trace on, so that what it writes to its outbox and its log lines continue the caller's
trace: `TraceContextMiddleware` does only that.
"""

from __future__ import annotations

from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.types import AsyncFuncAny, BrokerMiddleware
from opentelemetry import context, propagate, trace


class TraceContextMiddleware(BaseMiddleware[Any, Any]):
    """The consumed message's trace context is the current one while it is handled."""

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        token = context.attach(propagate.extract(msg.headers))
        try:
            return await call_next(msg)
        finally:
            context.detach(token)


def tracing_installed() -> bool:
    """Whether a tracer provider records spans in this process (the API's default records
    none)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def consume_tracing() -> BrokerMiddleware[Any, Any]:
    """The middleware for a broker made now: spans per message when a tracer provider is
    installed, the trace context alone when none is (and FastStream's telemetry middleware
    is then not even loaded)."""
    if not tracing_installed():
        return TraceContextMiddleware
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware

    return NatsTelemetryMiddleware()
