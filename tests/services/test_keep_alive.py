"""Progress reports of long deliveries (services.keep_alive)."""

from __future__ import annotations

import asyncio

from services.keep_alive import KeepAlive
from tests.helpers import eventually

INTERVAL_S = 0.05


class Reports:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


async def a_later_keep_alive_reported() -> None:
    """Timers fire in order: once a keep-alive started after another has reported, the
    earlier one would have reported too, had it been left running."""
    later = Reports()
    keep_alive = KeepAlive(INTERVAL_S, later)
    try:
        await eventually(lambda: _at_least(later, 1), what="the later keep-alive's report")
    finally:
        keep_alive.cancel()


async def _at_least(reports: Reports, count: int) -> bool:
    return reports.count >= count


class TestKeepAlive:
    async def test_a_delivery_shorter_than_the_interval_reports_nothing_and_starts_no_task(
        self,
    ) -> None:
        reports = Reports()
        tasks_before = asyncio.all_tasks()
        keep_alive = KeepAlive(INTERVAL_S, reports)
        assert asyncio.all_tasks() == tasks_before, "a task per delivery is what this avoids"
        keep_alive.cancel()
        await a_later_keep_alive_reported()
        assert reports.count == 0

    async def test_a_long_delivery_reports_every_interval_until_cancelled(self) -> None:
        reports = Reports()
        keep_alive = KeepAlive(INTERVAL_S, reports)
        await eventually(lambda: _at_least(reports, 3), what="three reports")
        keep_alive.cancel()
        reported = reports.count
        await a_later_keep_alive_reported()
        assert reports.count == reported, "a report after the delivery ended"
