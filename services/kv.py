"""Reading every entry of a NATS KV bucket without creating a consumer.

``kv.keys()`` creates an ordered consumer per call, and a stream holds at most
1000 consumers by default (nats-server 2.15), so code that lists a bucket often
reads the key list from the bucket stream's subject state instead.
"""

from __future__ import annotations

import contextlib

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue


async def kv_entries(
    js: JetStreamContext, kv: KeyValue, bucket: str, keys: str = ">"
) -> dict[str, bytes]:
    """The current value of every key of ``bucket`` matching ``keys`` (a subject filter)."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}{keys}")
    found: dict[str, bytes] = {}
    for subject in info.state.subjects or {}:
        key = subject.removeprefix(prefix)
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            entry = await kv.get(key)
            if entry.value:
                found[key] = entry.value
    return found
