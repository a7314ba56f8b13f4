"""FastStream's Prometheus middleware, with each series looked up by its labels once.

For every message it consumes, FastStream's middleware finds six series by their
labels (received, size, in process twice, duration, status). prometheus_client
checks the label names, builds the values and takes a lock at every look-up, about
4-5 us each on this kind of machine: some 5% of a durable tool call's CPU. The
labels of a consumer's series never change (application, broker, handler, status),
so `BrokerMetrics` keeps the series it found and finds it again in a dict. It also
builds each message's middleware from the class itself, where FastStream goes through
the subscripted generic (``BasePrometheusMiddleware[...]``): that alias then tries to
record itself on the instance, whose slots refuse it, and the failed attempt costs
about 1.6 us a message. The metrics, their names, labels and values are FastStream's
own.
"""

from __future__ import annotations

from typing import Any

from faststream._internal.context.repository import ContextRepo
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.prometheus.middleware import BasePrometheusMiddleware
from prometheus_client import CollectorRegistry


class _RememberedSeries:
    """A metric whose series, once found by their labels, are found again in a dict.

    Only ``labels`` is answered here; the series it returns are prometheus_client's.
    FastStream never removes a series, so none kept here goes stale.
    """

    __slots__ = ("_metric", "_series")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._series: dict[tuple[tuple[str, str], ...], Any] = {}

    def labels(self, **labels: str) -> Any:
        key = tuple(labels.items())
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._metric.labels(**labels)
        return series


class BrokerMetrics(NatsPrometheusMiddleware):
    """`NatsPrometheusMiddleware` whose series are looked up once per set of labels."""

    def __init__(self, *, registry: CollectorRegistry, app_name: str) -> None:
        super().__init__(registry=registry, app_name=app_name)
        container = self._metrics_container
        # Its public slots are the metrics, whichever FastStream's version keeps.
        for name in type(container).__slots__:
            if not name.startswith("_"):
                setattr(container, name, _RememberedSeries(getattr(container, name)))

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> BasePrometheusMiddleware[Any, Any]:
        # FastStream's own __call__, less the generic alias; this middleware takes no
        # custom labels, so the (empty) static ones are all there are.
        return BasePrometheusMiddleware(
            msg,
            metrics_manager=self._metrics_manager,
            settings_provider_factory=self._settings_provider_factory,
            context=context,
            custom_labels=self._static_labels,
        )
