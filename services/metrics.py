"""Prometheus metrics of one host, on a registry of its own (served at ``/metrics``).

Counters and histograms are updated where things happen; gauges that describe
state elsewhere (consumer backlog, dead letters, breakers, the outbox) are
refreshed by the host every few seconds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """Every metric Ballast exports, besides FastStream's own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages = Counter(
            "ballast_messages", "Messages handled, by outcome", ["service", "outcome"], registry=r
        )
        self.handler_seconds = Histogram(
            "ballast_handler_seconds",
            "Time a message spent in its handler",
            ["service"],
            registry=r,
        )
        self.pool_in_use = Gauge("ballast_pool_in_use", "Busy workers", ["service"], registry=r)
        self.pool_size = Gauge("ballast_pool_size", "Workers", ["service"], registry=r)
        self.consumer_pending = Gauge(
            "ballast_consumer_pending", "Messages waiting in the stream", ["service"], registry=r
        )
        self.consumer_in_flight = Gauge(
            "ballast_consumer_in_flight",
            "Messages delivered, not yet acknowledged",
            ["service"],
            registry=r,
        )
        self.dlq_depth = Gauge("ballast_dlq_depth", "Dead letters", ["service"], registry=r)
        self.breaker_state = Gauge(
            "ballast_breaker_state", "0 closed, 1 half-open, 2 open", ["breaker"], registry=r
        )
        self.outbox_unsent = Gauge(
            "ballast_outbox_unsent", "Outbox rows not yet published", registry=r
        )
        self.outbox_lag = Gauge(
            "ballast_outbox_lag_seconds", "Age of the oldest unsent outbox row", registry=r
        )
        self.relay_published = Counter(
            "ballast_relay_published", "Outbox rows published by the relay", registry=r
        )
        self.tokens = Counter(
            "ballast_llm_tokens", "Model tokens", ["agent", "model", "direction"], registry=r
        )
        self.cost = Counter(
            "ballast_llm_cost_usd", "Model cost in dollars", ["agent", "model"], registry=r
        )
        self.budget_rejections = Counter(
            "ballast_budget_rejections",
            "Steps refused by a budget cap",
            ["agent", "scope", "metric"],
            registry=r,
        )
