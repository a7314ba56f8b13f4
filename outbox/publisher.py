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


class JetStreamPublisher:
    """Publishes batches with ``publish_async`` and waits for every acknowledgement."""

    def __init__(self, js: JetStreamContext, *, ack_timeout_s: float = 5.0) -> None:
        self._js = js
        self._ack_timeout_s = ack_timeout_s

    async def publish_batch(self, messages: list[Outgoing]) -> list[Published]:
        """Publish all, in order, pipelined; one `Published` per message, same order."""
        futures: list[asyncio.Future[Any] | BaseException] = []
        for msg in messages:
            headers = {**msg.headers, Header.MSG_ID: msg.message_id}
            try:
                fut = await self._js.publish_async(
                    msg.subject, msg.payload, headers=headers, wait_stall=self._ack_timeout_s
                )
                futures.append(fut)
            except Exception as exc:
                futures.append(exc)
        return [await self._outcome(msg, fut) for msg, fut in zip(messages, futures, strict=True)]

    async def _outcome(self, msg: Outgoing, fut: asyncio.Future[Any] | BaseException) -> Published:
        if isinstance(fut, BaseException):
            return Published(msg.message_id, error=_describe(fut))
        try:
            ack = await asyncio.wait_for(fut, self._ack_timeout_s)
        except Exception as exc:
            # A timed-out publish is "unknown": the row stays unsent and goes again with
            # the same id, and the stream's deduplication drops the copy if it did arrive.
            return Published(msg.message_id, error=_describe(exc))
        return Published(msg.message_id, duplicate=bool(getattr(ack, "duplicate", False)))

    async def publish_one(self, msg: Outgoing) -> Published:
        """Publish a single message and wait for its acknowledgement."""
        (result,) = await self.publish_batch([msg])
        if not result.ok:
            raise PublishError(
                f"publishing {msg.message_id} to {msg.subject} failed: {result.error}"
            )
        return result


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
