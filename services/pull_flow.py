"""Pulling from a JetStream consumer as fast as a pool frees slots, and no faster.

FastStream's pull subscriber either fetches one message per round trip to the
server (``batch_size=1``), which serialises a consumer on that round trip, or
fetches a batch, which holds messages another replica could run and waits its
whole timeout for a batch that is not full. Here a replica keeps pull requests
open at the server for exactly the slots its pool has free, and hands each
message to FastStream's handler path (middlewares, tracing, metrics) the moment
it arrives:

- asked + held <= pool: a replica never takes a message it cannot start at once;
- a new request asks for at least half the pool (or whatever is free when nothing
  is asked for), so a busy consumer sends one request per few messages;
- requests expire after the subscriber's pull timeout; the server's expiry status
  says how many were not delivered, and a request whose expiry never came back
  (the connection dropped meanwhile) counts as expired a moment later;
- nothing is asked while the connection is down (nats-py would buffer the requests
  and send them all on reconnect, each asking for the same free slots);
- on stop: the open requests end first (the inbox is drained, and the server keeps
  no request nobody listens for), a message already on its way is handed back (nak)
  at once for another replica, and only then do handlers in flight get FastStream's
  grace period: what they hand back goes to another replica, not round again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
import structlog
from faststream.nats.subscriber.usecases import ConcurrentPullStreamSubscriber
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

log = structlog.get_logger("ballast.pull")

STATUS_HEARTBEAT = "100"
STATUS_EXPIRED = "408"
PENDING_HEADER = "Nats-Pending-Messages"
LOST_AFTER_S = 1.0
"""How long past its expiry a request whose expiry status never came counts as gone."""
DRAIN_TIMEOUT_S = 2.0
"""Longest wait, when stopping, for the server to confirm the end of the open requests."""


class PullCredit:
    """How many messages a replica may still ask for: its pool less what it holds and
    what its open requests may still bring. Pure bookkeeping, no I/O."""

    def __init__(self, pool: int, expires_s: float) -> None:
        self.pool = pool
        self.expires_s = expires_s
        self.held = 0
        """Messages received and not yet finished."""
        self.asked = 0
        """Messages asked for by open requests and not yet delivered."""
        self._last_expiry = 0.0

    def to_ask(self, now: float) -> int:
        """The batch of a request to send now (0: none); counts it as asked."""
        if self.asked and now > self._last_expiry + LOST_AFTER_S:
            self.asked = 0  # every request is past its expiry: none can deliver any more
        free = self.pool - self.held - self.asked
        if free <= 0 or (self.asked and 2 * free < self.pool):
            return 0
        self.asked += free
        self._last_expiry = now + self.expires_s
        return free

    def received(self) -> None:
        self.asked = max(0, self.asked - 1)
        self.held += 1

    def finished(self) -> None:
        self.held -= 1

    def ended(self, undelivered: int | None) -> None:
        """A request ended with ``undelivered`` messages not sent (None: not said)."""
        self.asked = 0 if undelivered is None else max(0, self.asked - undelivered)


class FlowControlledPullSubscriber(ConcurrentPullStreamSubscriber):
    """FastStream's concurrent pull subscriber with its fetch loop replaced (see the module).

    FastStream has no hook for the fetch loop; `flow_controlled` turns the subscriber
    FastStream built (its handler, middlewares, AsyncAPI entry and graceful stop) into
    one of these.
    """

    __slots__ = ()
    _pulling: _PullLoop | None = None
    """The pull loop while it runs; a class default, since FastStream built the instance."""

    async def _consume_pull(self, cb: Callable[[Msg], Coroutine[Any, Any, Any]]) -> None:
        # ``cb`` is FastStream's hand-off to its own worker queue; messages go to `consume`.
        expires_s = self.pull_sub.timeout or 1.0
        self._pulling = _PullLoop(
            self,
            f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream.name}.{self.config.durable_name}",
            PullCredit(self.max_workers, expires_s),
            super()._resolved_subject_string,
        )
        await self._pulling.run()

    @property
    def _resolved_subject_string(self) -> str:
        # FastStream's log context reads this for every message it consumes and builds the
        # subject's address anew each time (about 5 us); while pulling it cannot change.
        pulling = self._pulling
        return pulling.subject if pulling is not None else super()._resolved_subject_string

    async def stop(self) -> None:
        """End the open pull requests first, then stop as FastStream does (in-flight
        handlers get the grace period). Otherwise a message a handler hands back once
        the grace period is over would come straight back into this replica's open
        request, spending a delivery each time, instead of going to another replica."""
        pulling, self._pulling = self._pulling, None
        if pulling is not None:
            await pulling.stop_asking()
        await super().stop()


class _PullLoop:
    """One run of a subscriber's pull loop: its requests, its inbox, its handlers."""

    def __init__(
        self,
        subscriber: FlowControlledPullSubscriber,
        next_subject: str,
        credit: PullCredit,
        subject: str,
    ) -> None:
        self.subscriber = subscriber
        self.next_subject = next_subject
        self.credit = credit
        self.subject = subject
        """The subscriber's subject as its log context names it."""
        self.changed = asyncio.Event()
        self.handlers = asyncio.TaskGroup()
        self.asking = True
        self._replies: Subscription | None = None

    async def run(self) -> None:
        connection = self.subscriber.connection
        inbox = connection.new_inbox()
        expires_ns = int(self.credit.expires_s * 1e9)
        try:
            async with self.handlers:
                self._replies = await connection.subscribe(inbox, cb=self._arrived)
                while self.asking and self.subscriber.running:
                    # While nats-py reconnects, a request would wait in its buffer and go
                    # out on reconnect with every other request buffered meanwhile: all of
                    # them asking for the same free slots. Nothing is asked until then.
                    connected = connection.is_connected
                    batch = self.credit.to_ask(time.monotonic()) if connected else 0
                    if batch:
                        request = json.dumps({"batch": batch, "expires": expires_ns})
                        try:
                            await connection.publish(
                                self.next_subject, request.encode(), reply=inbox
                            )
                        except nats.errors.Error as exc:  # disconnected: asked again later
                            self.credit.ended(undelivered=batch)
                            log.warning("pull.request_not_sent", error=str(exc) or repr(exc))
                    self.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.credit.expires_s):
                            await self.changed.wait()
                # Stopping: leaving the task group waits for the handlers in flight
                # (FastStream cancels this task, and so them, once its grace period is
                # over).
        finally:
            await self.stop_asking()

    async def stop_asking(self) -> None:
        """Send no more requests and end the open ones: the inbox is drained (the server
        keeps no request without interest), what was already on its way is handed back."""
        self.asking = False
        self.changed.set()
        replies, self._replies = self._replies, None
        if replies is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):  # the broker may be away
                    await replies.drain()  # type: ignore[no-untyped-call]  # nats-py's

    async def _arrived(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get(api.Header.STATUS)
        if status is None:
            self.credit.received()
            try:
                if not (self.asking and self.subscriber.running):
                    raise RuntimeError("stopping")
                self.handlers.create_task(self._handle(msg))
            except RuntimeError:  # stopping or stopped: another replica takes it now
                self.credit.finished()
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak()
        elif status != STATUS_HEARTBEAT:
            pending = headers.get(PENDING_HEADER)
            self.credit.ended(int(pending) if pending is not None else None)
            if status != STATUS_EXPIRED:
                log.info("pull.request_ended", status=status, pending=pending)
            self.changed.set()

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.subscriber.consume(msg)
        finally:
            self.credit.finished()
            self.changed.set()


def flow_controlled(subscriber: object) -> FlowControlledPullSubscriber:
    """``subscriber``, as built by ``broker.subscriber(..., pull_sub=..., max_workers=...)``,
    pulling with flow control. Raises TypeError for any other kind of subscriber."""
    if type(subscriber) is not ConcurrentPullStreamSubscriber:
        raise TypeError(
            f"flow control needs FastStream's ConcurrentPullStreamSubscriber, got "
            f"{type(subscriber).__name__}: pass pull_sub and max_workers > 1"
        )
    if subscriber.config.durable_name is None:
        raise TypeError("flow control pulls from a durable consumer: pass durable=...")
    subscriber.__class__ = FlowControlledPullSubscriber
    assert isinstance(subscriber, FlowControlledPullSubscriber)
    return subscriber
