"""Which service replicas are running, and how busy each is, in a NATS KV bucket.

A pool's use lives in the memory of the process that runs it. Every host writes
a short report per service into ``ballast_services`` each time it refreshes its
gauges, under ``<service>.<instance>``; the bucket's TTL removes the reports of
a replica that stopped writing (killed, partitioned), so the list shows what runs
now without anyone having to deregister.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from datetime import datetime, timedelta

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel

from contracts.wire import utc_now
from services.kv import kv_entries

BUCKET = "ballast_services"
TTL = timedelta(seconds=30)
"""A replica that has not reported for this long is gone from the list."""

_NOT_A_KEY = re.compile(r"[^-_=a-zA-Z0-9]")


class ServiceReport(BaseModel):
    """One replica of one service, as it last reported itself."""

    service: str
    instance: str
    pool_size: int
    pool_in_use: int
    pending: int
    in_flight: int
    reported_at: datetime


def instance_name(host: str) -> str:
    """A name for this process that stays readable: the host's name, machine and pid."""
    raw = f"{host}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    return _NOT_A_KEY.sub("_", raw)


class Presence:
    """Writes this process's reports; one per host (which created the bucket at start)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def report(self, report: ServiceReport) -> None:
        if self._kv is None:
            self._kv = await self._js.key_value(BUCKET)
        await self._kv.put(f"{report.service}.{report.instance}", report.model_dump_json().encode())


async def running_services(js: JetStreamContext) -> list[ServiceReport]:
    """Every replica that reported within the TTL, by service then instance."""
    try:
        kv = await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return []
    fresh_after = utc_now() - TTL
    reports = [
        ServiceReport.model_validate_json(value)
        for value in (await kv_entries(js, kv, BUCKET)).values()
    ]
    return sorted(
        (r for r in reports if r.reported_at >= fresh_after),
        key=lambda r: (r.service, r.instance),
    )
