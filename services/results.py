"""Waiting for the results of an agent run's tool calls and child tasks.

Results are published to ``ballast.result.<agent>.<task_id>`` with the waiting
step's key in the ``ballast-step-key`` header. An agent host keeps one plain
subscription on ``ballast.result.<agent>.>`` and hands each result to the run
that waits for it. Because results are also kept in the ``BALLAST_RESULTS``
stream, a run can read back a result that arrived while nobody listened (the
run is re-executed after a crash, or the connection was down): it scans the
stream by subject when it starts waiting on a redelivery, and periodically
while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from contracts.subjects import PREFIX, Header, Stream, check_name, result_subject
from services.stream_reader import stored_messages

log = structlog.get_logger("ballast.results")

RESCAN_INTERVAL_S = 5.0
"""How often a waiting run re-reads the stream in case the live subscription missed a result."""


class PendingResult:
    """A result some step is waiting for.

    The waiting run awaits one future, woken by its result, by a request to read the
    stream again, or by the rescan interval: a step waits with no task or callback of
    its own, and its result wakes it in one turn of the loop.
    """

    def __init__(
        self,
        waiter: ResultWaiter,
        task_id: str,
        step_key: str,
        scan_first: bool,
        accept: Callable[[bytes], bool],
    ) -> None:
        self._waiter = waiter
        self._task_id = task_id
        self._step_key = step_key
        self._scan_first = scan_first
        self._accept = accept
        self._result: bytes | None = None
        self._wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def deliver(self, data: bytes) -> None:
        """A result arrived for this step: keep it if it is the one awaited, and wake."""
        if self._result is None and self._accept(data):
            self._result = data
            self.wake()

    def wake(self) -> None:
        """Wake the waiting run: it takes the result delivered, or else reads the stream."""
        if not self._wake.done():
            self._wake.set_result(None)

    async def get(self) -> bytes:
        """The result's payload; waits as long as needed (the caller's pool bounds the time)."""
        if self._scan_first:
            found = await self._waiter.read_back(self._task_id, self._step_key, self._accept)
            if found is not None:
                return found
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESCAN_INTERVAL_S):
                    await self._wake
            if self._result is not None:
                return self._result
            # Ready before reading: a result arriving meanwhile wakes the next wait.
            self._wake = asyncio.get_running_loop().create_future()
            found = await self._waiter.read_back(self._task_id, self._step_key, self._accept)
            if found is not None:
                return found


class ResultWaiter:
    """Routes results for one agent to the runs waiting in this process."""

    def __init__(self, nc: Client, js: JetStreamContext, agent: str) -> None:
        self._nc = nc
        self._js = js
        self._agent = check_name(agent)
        # Several executions of one task can wait for the same step at once (a redelivery
        # while the first execution still runs), so each key has a set of waiters.
        self._pending: dict[str, set[PendingResult]] = {}
        self._sub: Subscription | None = None

    def connection_restored(self) -> None:
        """After a reconnection: results published meanwhile never reached the subscription,
        so every waiting run reads the stream now."""
        for waiting in self._pending.values():
            for pending in waiting:
                pending.wake()

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{PREFIX}.result.{self._agent}.>", cb=self._on_result)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    @asynccontextmanager
    async def expect(
        self,
        task_id: str,
        step_key: str,
        *,
        scan_first: bool,
        accept: Callable[[bytes], bool] = lambda _: True,
    ) -> AsyncIterator[PendingResult]:
        """Register interest in ``step_key`` *before* the request is sent, so no result is missed.

        ``scan_first``: read the stream before waiting (a result may exist from an
        earlier execution of this run).
        """
        pending = PendingResult(self, task_id, step_key, scan_first, accept)
        waiting = self._pending.setdefault(step_key, set())
        waiting.add(pending)
        try:
            yield pending
        finally:
            waiting.discard(pending)
            if not waiting:
                self._pending.pop(step_key, None)

    async def _on_result(self, msg: Msg) -> None:
        key = (msg.headers or {}).get(Header.STEP_KEY)
        for pending in self._pending.get(key, ()) if key else ():
            pending.deliver(msg.data)

    async def read_back(
        self, task_id: str, step_key: str, accept: Callable[[bytes], bool] = lambda _: True
    ) -> bytes | None:
        """The newest stored result for ``step_key`` of ``task_id`` that ``accept`` takes."""
        newest = None
        try:
            async for raw in stored_messages(
                self._js, Stream.RESULTS.value, result_subject(self._agent, task_id), direct=True
            ):
                if (
                    (raw.headers or {}).get(Header.STEP_KEY) == step_key
                    and raw.data is not None
                    and accept(raw.data)
                ):
                    newest = raw.data
        except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError) as exc:
            # The live subscription or the next rescan will find it.
            log.warning("results.read_back_failed", error=str(exc) or type(exc).__name__)
        return newest


def result_headers(task_id: str, step_key: str) -> dict[str, str]:
    """Headers of a result message for ``step_key``."""
    return {Header.TASK_ID: task_id, Header.STEP_KEY: step_key}
