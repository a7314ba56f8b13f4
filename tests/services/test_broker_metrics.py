"""BrokerMetrics reports exactly what FastStream's Prometheus middleware reports."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest
from faststream._internal.context.repository import ContextRepo
from faststream.message import StreamMessage
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from services.broker_metrics import BrokerMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _consume(middleware: NatsPrometheusMiddleware) -> None:
    """Three messages of one handler (one of them failing) and one of another."""
    context = ContextRepo()

    async def handled(msg: StreamMessage[Any]) -> None:
        return None

    async def failing(msg: StreamMessage[Any]) -> None:
        raise ValueError("the handler failed")

    for subject, size, handler in (
        ("ballast.tool.a", 10, handled),
        ("ballast.tool.a", 300, failing),
        ("ballast.tool.b", 20, handled),
        ("ballast.tool.a", 5_000, handled),
    ):
        raw = Msg(_client=None, subject=subject, reply="", data=b"x" * size)  # type: ignore[arg-type]
        msg: StreamMessage[Any] = StreamMessage(
            raw_message=raw, body=raw.data, headers={}, path={}, reply_to=""
        )
        with pytest.raises(ValueError, match="failed") if handler is failing else nullcontext():
            await middleware(raw, context=context).consume_scope(handler, msg)


def _samples(registry: CollectorRegistry) -> Samples:
    """Every sample but the durations' sums (times differ from run to run)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith(("_duration_seconds_sum", "_created"))
    }


async def test_the_same_series_and_values_as_fastStreams_own_middleware() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    await _consume(NatsPrometheusMiddleware(registry=theirs, app_name="svc"))
    await _consume(BrokerMetrics(registry=ours, app_name="svc"))
    expected = _samples(theirs)
    assert _samples(ours) == expected
    received = {
        dict(labels)["handler"]: value
        for (name, labels), value in expected.items()
        if name == "faststream_received_messages_total"
    }
    assert received == {"ballast.tool.a": 3, "ballast.tool.b": 1}, "the comparison compares"
