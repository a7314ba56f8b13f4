"""`BallastClient`: publish tasks and wait for how they ended.

This is what an application (or ``ballast publish``) uses to talk to Ballast
from outside. A client in another language does the same with its NATS
library: publish the JSON of a `TaskRequest` (see ``contracts/schemas``) to
``ballast.task.<agent>`` with the header ``Nats-Msg-Id: <task_id>``, and read
the `TaskResult` from ``ballast.event.task.<status>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from contracts.subjects import PREFIX, Header, Stream, task_subject
from contracts.tasks import TaskRequest, TaskResult
from contracts.wire import utc_now
from services.broker import NatsCredentials
from services.errors import BrokerError
from services.identity import SigningKey, sign_principal
from services.telemetry import tracer

LOOKBACK = timedelta(minutes=5)
"""How far back `wait` looks for a result, for tasks that may have ended before it started."""

SEEN_LIMIT = 10_000
"""Task results a client remembers for waits that come after the result."""

TASK_EVENTS = f"{PREFIX}.event.task.>"


ELECTION_WAIT_S = 10.0
"""How long a publish that no stream answered is retried (a cluster electing a leader)."""


class BallastClient:
    """A connection to the broker for submitting tasks. Use with ``async with``."""

    def __init__(
        self,
        url: str,
        *,
        signer: SigningKey | None = None,
        principal_ttl: timedelta = timedelta(hours=24),
        publish_timeout_s: float = 30.0,
        credentials: NatsCredentials | None = None,
    ) -> None:
        self.url = url
        self.credentials = credentials or NatsCredentials()
        self.signer = signer
        """Signs the principal of every task submitted (services refuse unsigned ones)."""
        self.principal_ttl = principal_ttl
        self.publish_timeout_s = publish_timeout_s
        """How long `submit` keeps trying while the broker is unreachable."""
        self._nc: Client | None = None
        self._watcher: asyncio.Future[Subscription] | None = None
        self._waiting: dict[str, asyncio.Future[TaskResult]] = {}
        self._seen: OrderedDict[str, TaskResult] = OrderedDict()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the client is not connected; use 'async with BallastClient(...)'")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    async def connect(self) -> None:
        try:
            self._nc = await nats.connect(
                [s.strip() for s in self.url.split(",") if s.strip()],  # a cluster: several URLs
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                **self.credentials.connect_options(),
            )
        except (OSError, nats.errors.NoServersError) as exc:
            raise BrokerError(
                f"cannot reach NATS at {self.url}: {exc}; is 'ballast up' running, "
                "or is BALLAST_NATS_URL right?"
            ) from exc

    async def close(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await (await self._watcher).unsubscribe()
            self._watcher = None
        if self._nc is not None:
            try:
                await self._nc.drain()
            except nats.errors.Error:  # the broker is away: there is nothing to drain
                with contextlib.suppress(OSError, nats.errors.Error):
                    await self._nc.close()
            self._nc = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def admit(self, task: TaskRequest) -> tuple[TaskRequest, dict[str, str]]:
        """The task as it is published (its principal given an expiry) and its headers."""
        headers = {Header.MSG_ID: task.task_id, Header.TASK_ID: task.task_id}
        propagate.inject(headers)  # the caller's trace continues in the task's run
        if self.signer is not None:
            principal = task.principal
            if principal.expires_at is None:
                principal = principal.model_copy(
                    update={"expires_at": utc_now() + self.principal_ttl}
                )
                task = task.model_copy(update={"principal": principal})
            headers[Header.PRINCIPAL] = sign_principal(principal, self.signer)
        if task.deadline is not None:
            headers[Header.DEADLINE] = task.deadline.isoformat()
        return task, headers

    async def submit(self, task: TaskRequest) -> bool:
        """Publish ``task``, signed; return False if the broker already had it (same task id).

        The publish is a span of its own, so a task submitted outside any trace
        starts one that its whole run continues.
        """
        attributes = {"ballast.task_id": task.task_id, "ballast.agent": task.agent}
        with tracer.start_as_current_span(
            f"ballast.submit {task.agent}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            return await self._publish(*self.admit(task))

    async def _publish(self, task: TaskRequest, headers: dict[str, str]) -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.publish_timeout_s
        while True:
            try:
                ack = await self.js.publish(
                    task_subject(task.agent), task.model_dump_json().encode(), headers=headers
                )
                return not ack.duplicate
            except nats.js.errors.NoStreamResponseError as exc:
                # No stream, or (in a cluster) a stream electing a new leader after a node
                # died: the latter passes within seconds, so wait before giving up.
                if loop.time() > min(deadline, started + ELECTION_WAIT_S):
                    raise BrokerError(
                        "no stream takes tasks: start a Ballast service first (it creates "
                        "the streams), or check that the NATS cluster has a quorum"
                    ) from exc
                await asyncio.sleep(0.2)
            except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError) as exc:
                # Unknown outcome: publishing again with the same id is safe (deduplicated).
                if loop.time() > deadline:
                    raise BrokerError(
                        f"the broker did not confirm task {task.task_id} within "
                        f"{self.publish_timeout_s:g}s; publishing it again with the same "
                        "task id is safe"
                    ) from exc
                await asyncio.sleep(0.2)

    async def wait(
        self, task_id: str, *, timeout_s: float, since: datetime | None = None
    ) -> TaskResult:
        """The result of ``task_id``; raises TimeoutError if it does not end in time.

        All waits of a client share one watcher of ``ballast.event.task.>``, started
        at the first wait (looking back `LOOKBACK` before ``since``), and remember what
        they saw, so a task that ended before its wait began is found too.
        """
        if task_id in self._seen:
            return self._seen[task_id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self._watcher is None:
                # One watcher for all waits, also when many start at once.
                self._watcher = asyncio.ensure_future(
                    self._watch_events((since or utc_now()) - LOOKBACK)
                )
            watcher = self._watcher
            try:
                await watcher
                break
            except nats.errors.Error as exc:
                # A cluster electing the stream's leader: start the watcher again.
                if self._watcher is watcher:
                    self._watcher = None
                if loop.time() > deadline:
                    raise TimeoutError(f"cannot watch task events: {exc}") from exc
                await asyncio.sleep(0.5)
        timeout_s = max(0.0, deadline - loop.time())
        if task_id in self._seen:
            return self._seen[task_id]
        found = self._waiting.setdefault(task_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(found), timeout_s)
        finally:
            if found.done() or found.cancelled():
                self._waiting.pop(task_id, None)

    async def _watch_events(self, start: datetime) -> Subscription:
        async def on_event(msg: Msg) -> None:
            result = TaskResult.model_validate_json(msg.data)
            self._seen[result.task_id] = result
            while len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            waiting = self._waiting.get(result.task_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(result)

        # Start at a sequence, not a time: nats-py re-creates an ordered consumer from its
        # last sequence, and the server refuses a start sequence beside a start time.
        return await self.js.subscribe(
            TASK_EVENTS,
            stream=Stream.EVENTS.value,
            cb=on_event,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=await self._first_sequence_since(start),
            ),
        )

    async def _first_sequence_since(self, start: datetime) -> int:
        """The sequence of the first task event at or after ``start`` (or the next one)."""
        request = {
            "start_time": start.isoformat().replace("+00:00", "Z"),
            "next_by_subj": TASK_EVENTS,
        }
        reply = await self.nc.request(
            f"$JS.API.DIRECT.GET.{Stream.EVENTS.value}", json.dumps(request).encode(), timeout=5
        )
        sequence = (reply.headers or {}).get("Nats-Sequence")
        if sequence is not None:
            return int(sequence)
        info = await self.js.stream_info(Stream.EVENTS.value)
        return int(info.state.last_seq) + 1

    async def run(self, task: TaskRequest, *, timeout_s: float = 60.0) -> TaskResult:
        """Submit ``task`` and wait for its result."""
        since = utc_now()
        await self.submit(task)
        return await self.wait(task.task_id, timeout_s=timeout_s, since=since)
