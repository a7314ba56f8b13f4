"""Publishing to JetStream with acknowledgements, many messages in flight.

A publish is only done when the stream acknowledged it. An acknowledgement
flagged ``duplicate`` is a success too: the stream already holds that message
id, which is exactly what a relay retrying after a crash wants.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext

from contracts.subjects import Header
from outbox.errors import PublishError


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to publish."""

    message_id: str
    subject: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Published:
    """The broker's answer for one message: stored (or already stored), or an error."""

    message_id: str
    error: str | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


IN_FLIGHT = 1000
"""Publishes awaiting their acknowledgement up to which the next one goes out without
nats-py's stall timeout. That timeout runs every publish in a task of its own, which
cost two thirds of the publish rate here; past this many, it guards the wait for a free
slot. The JetStream context must admit at least this many (nats-py's default: 4,000)."""


class JetStreamPublisher:
    """Publishes batches with ``publish_async`` and waits for every acknowledgement."""

    def __init__(self, js: JetStreamContext, *, ack_timeout_s: float = 5.0) -> None:
        self._js = js
        self._connection = js._nc  # nats-py's JetStream context has no public accessor
        self._ack_timeout_s = ack_timeout_s

    async def publish_batch(self, messages: list[Outgoing]) -> list[Published]:
        """Publish all, in order, pipelined; one `Published` per message, same order.

        The acknowledgements are awaited together, for ``ack_timeout_s`` in all; a
        publish not acknowledged by then is "unknown": its row stays unsent and goes
        again with the same id, and the stream's deduplication drops the copy if it
        did arrive.
        """
        futures: list[asyncio.Future[Any] | BaseException] = []
        for msg in messages:
            if not self._connection.is_connected:
                futures.append(_NOT_CONNECTED)
                continue
            headers = {**msg.headers, Header.MSG_ID: msg.message_id}
            stall = None if self._js.publish_async_pending() < IN_FLIGHT else self._ack_timeout_s
            try:
                fut = await self._js.publish_async(
                    msg.subject, msg.payload, headers=headers, wait_stall=stall
                )
                futures.append(fut)
            except Exception as exc:
                futures.append(exc)
        waiting = [fut for fut in futures if isinstance(fut, asyncio.Future)]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._ack_timeout_s)
            for fut in late:
                fut.cancel()  # frees its slot in nats-py's count of publishes in flight
        return [self._outcome(msg, fut) for msg, fut in zip(messages, futures, strict=True)]

    def _outcome(self, msg: Outgoing, fut: asyncio.Future[Any] | BaseException) -> Published:
        if isinstance(fut, asyncio.Future):
            if fut.cancelled():
                error = f"no acknowledgement within {self._ack_timeout_s}s"
                return Published(msg.message_id, error=error)
            if (exc := fut.exception()) is None:
                ack = fut.result()
                return Published(msg.message_id, duplicate=bool(getattr(ack, "duplicate", False)))
            fut = exc
        return Published(msg.message_id, error=_describe(fut))

    async def publish_one(self, msg: Outgoing) -> Published:
        """Publish a single message and wait for its acknowledgement."""
        (result,) = await self.publish_batch([msg])
        if not result.ok:
            raise PublishError(
                f"publishing {msg.message_id} to {msg.subject} failed: {result.error}"
            )
        return result


_NOT_CONNECTED = PublishError(
    "not connected to NATS; the message stays unsent and goes again once the connection is back"
)
"""Why nothing is published while nats-py reconnects: it would buffer the publishes and,
once its buffer is full, fail each one with its slot of the publishes in flight taken
for good (it counts a publish before sending it), until no slot is left and the relay
is stuck for the life of the process."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
