"""Signs of life for a delivery that runs long, started only once it does.

A delivery that outlasts a third of the broker's ack wait must report progress, or the
broker hands its message to another worker. Nearly every delivery ends long before
that. A task per delivery, started and cancelled around each one, cost about 3% of a
tool host's event loop (its creation, its first step to the sleep, its cancellation);
a timer costs a heap entry, and the task starts only when the timer fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class KeepAlive:
    """Runs ``report`` every ``interval_s`` from ``interval_s`` on, until `cancel`.

    ``report`` must handle its own failures: one that raises ends the reports.
    """

    def __init__(self, interval_s: float, report: Callable[[], Awaitable[None]]) -> None:
        self._interval_s = interval_s
        self._report = report
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            interval_s, self._start
        )

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self._reports())

    async def _reports(self) -> None:
        while True:
            await self._report()
            await asyncio.sleep(self._interval_s)

    def cancel(self) -> None:
        """No report from now on (one under way is cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
