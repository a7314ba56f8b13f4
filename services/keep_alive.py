"""Signs of life for the deliveries of a consumer that run long, from one timer.

A delivery that outlasts a third of the broker's ack wait must report progress, or the
broker hands its message to another worker. Nearly every delivery ends long before
that, so what each one pays to be watched is what counts: a task per delivery, started
and cancelled around it, cost about 3% of a loaded tool host's event loop, and a timer
per delivery left a cancelled handle in the loop's heap for a whole interval (thousands
of them under load). Here a delivery is an entry in a set, and one timer, armed while
any delivery runs, looks at them once an interval: a delivery that has run a whole
interval by then reports, and again at every later look until it ends. Its first
report comes between one and two intervals after it started, so an interval of a
third of the ack wait reports in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

Report = Callable[[], Coroutine[Any, Any, None]]
"""Tells the broker (and the claim) that a delivery is alive; handles its own failures:
one that raises is lost with its task."""


@dataclass(eq=False, slots=True)
class Watched:
    """One delivery being watched (see `KeepAlive.watch`)."""

    report: Report
    since: float
    reporting: asyncio.Task[None] | None = None


class KeepAlive:
    """Runs each watched delivery's report every ``interval_s`` once it has run that long."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._watched: set[Watched] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, report: Report) -> Watched:
        """Watch a delivery that starts now, until `stop`."""
        loop = asyncio.get_running_loop()
        watched = Watched(report, loop.time())
        self._watched.add(watched)
        if self._timer is None:
            self._timer = loop.call_later(self._interval_s, self._look)
        return watched

    def stop(self, watched: Watched) -> None:
        """No report for ``watched`` from now on (one under way is cancelled)."""
        self._watched.discard(watched)
        if watched.reporting is not None:
            watched.reporting.cancel()

    def _look(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() - self._interval_s
        for watched in self._watched:
            # A report still under way (a slow broker or database) is not doubled.
            if watched.since <= due and (watched.reporting is None or watched.reporting.done()):
                watched.reporting = loop.create_task(watched.report())
        self._timer = loop.call_later(self._interval_s, self._look) if self._watched else None
