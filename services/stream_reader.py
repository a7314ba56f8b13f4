"""Reading stored messages of a stream by subject, without creating a consumer.

Used where a consumer would be overkill: a run reading back its results after a
crash, and the DLQ tools listing dead letters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg


async def stored_messages(
    js: JetStreamContext, stream: str, subject: str, *, start_seq: int = 1, direct: bool = False
) -> AsyncIterator[RawStreamMsg]:
    """Messages of ``stream`` on ``subject`` (wildcards allowed), oldest first.

    ``direct`` reads with the direct-get API (the stream must allow it): any replica
    answers, and a service's NATS user is granted that API rather than the admin one.
    """
    seq = start_seq
    while True:
        try:
            raw = await js.get_msg(stream, seq, subject=subject, next=True, direct=direct)
        except nats.js.errors.NotFoundError:
            return
        yield raw
        if raw.seq is None:
            return
        seq = raw.seq + 1
