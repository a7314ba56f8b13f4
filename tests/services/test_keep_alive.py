"""Progress reports of long deliveries (services.keep_alive)."""

from __future__ import annotations

import asyncio

from services.keep_alive import KeepAlive
from tests.helpers import eventually

INTERVAL_S = 0.05


class Reports:
    """A report that counts its calls; ``hold`` keeps each one running until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.count = 0
        self.times: list[float] = []
        self.running = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self) -> None:
        self.count += 1
        self.times.append(asyncio.get_running_loop().time())
        self.running += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


async def _at_least(reports: Reports, count: int) -> bool:
    return reports.count >= count


async def a_later_delivery_reported(keep_alive: KeepAlive) -> None:
    """A delivery watched from now on has reported: the looks that would have found an
    earlier delivery due have happened."""
    later = Reports()
    watched = keep_alive.watch(later)
    try:
        await eventually(lambda: _at_least(later, 1), what="the later delivery's report")
    finally:
        keep_alive.stop(watched)


class TestKeepAlive:
    async def test_short_deliveries_report_nothing_and_start_no_task(self) -> None:
        keep_alive = KeepAlive(INTERVAL_S)
        reports = Reports()
        tasks_before = asyncio.all_tasks()
        for _ in range(100):
            keep_alive.stop(keep_alive.watch(reports))
        assert asyncio.all_tasks() == tasks_before, "a task per delivery is what this avoids"
        await a_later_delivery_reported(keep_alive)
        assert reports.count == 0

    async def test_a_long_delivery_reports_every_interval_until_stopped(self) -> None:
        keep_alive = KeepAlive(INTERVAL_S)
        first, second = Reports(), Reports()
        watched = [keep_alive.watch(first)]
        await eventually(lambda: _at_least(first, 1), what="the first delivery's report")
        # Watched halfway between two looks, the second one is not due at the next.
        loop = asyncio.get_running_loop()
        halfway = first.times[-1] + INTERVAL_S / 2
        while halfway < loop.time():
            halfway += INTERVAL_S
        await asyncio.sleep(halfway - loop.time())
        since = loop.time()
        watched.append(keep_alive.watch(second))
        await eventually(lambda: _at_least(second, 3), what="three reports")
        assert second.times[0] - since >= INTERVAL_S, "a report before the delivery ran long"
        for each in watched:
            keep_alive.stop(each)
        reported = first.count + second.count
        await a_later_delivery_reported(keep_alive)
        assert first.count + second.count == reported, "a report after the deliveries ended"

    async def test_a_slow_report_is_not_doubled_and_stopping_cancels_it(self) -> None:
        keep_alive = KeepAlive(INTERVAL_S)
        slow = Reports(hold=True)
        watched = keep_alive.watch(slow)
        await eventually(lambda: _at_least(slow, 1), what="the first report")
        for _ in range(3):  # looks that find the delivery due while its report runs
            await a_later_delivery_reported(keep_alive)
        assert slow.count == 1, "a second report while the first still ran"
        assert slow.running == 1
        keep_alive.stop(watched)
        await eventually(lambda: _cancelled(slow), what="the report under way cancelled")

    async def test_deliveries_watched_after_a_quiet_spell_still_report(self) -> None:
        keep_alive = KeepAlive(INTERVAL_S)
        await a_later_delivery_reported(keep_alive)
        await asyncio.sleep(3 * INTERVAL_S)  # nothing watched: the timer lapses
        await a_later_delivery_reported(keep_alive)


async def _cancelled(reports: Reports) -> bool:
    return reports.cancelled == 1 and reports.running == 0
