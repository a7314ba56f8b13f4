"""Ballast's NATS KV buckets, created with as many replicas as its streams.

A bucket created with one replica lives on one node of a cluster: when that node
dies, whatever it holds (who may call which tool, breaker states, approvals) is
offline and every service that needs it stalls. Hosts therefore create the
buckets at start, like the streams, with ``BALLAST_STREAM_REPLICAS``, and raise the
replicas of buckets that exist with fewer.
"""

from __future__ import annotations

from datetime import timedelta

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

from services import approvals, breakers, presence, rate_limits, registry

BUCKETS: tuple[tuple[str, int, timedelta | None], ...] = (
    (registry.BUCKET, 1, None),
    (breakers.BUCKET, 1, None),
    (approvals.BUCKET, 5, None),
    (presence.BUCKET, 1, presence.TTL),
    (rate_limits.BUCKET, 1, None),
)
"""Name, history and time to live of every bucket."""


async def ensure_buckets(js: JetStreamContext, replicas: int, names: set[str]) -> None:
    """Create the buckets ``names`` with ``replicas`` replicas, or raise the replicas of
    existing ones (a service's NATS user may touch only the buckets it uses)."""
    for name, history, ttl in BUCKETS:
        if name not in names:
            continue
        try:
            info = await js.stream_info(f"KV_{name}")
        except nats.js.errors.NotFoundError:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=name,
                    history=history,
                    ttl=ttl.total_seconds() if ttl else None,
                    replicas=replicas,
                )
            )
            continue
        config = info.config
        if (config.num_replicas or 1) < replicas:
            config.num_replicas = replicas
            await js.update_stream(config)
