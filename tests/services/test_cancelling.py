"""Stopping background tasks: a task that survives one cancellation is cancelled again."""

from __future__ import annotations

import asyncio

from services.cancelling import cancel_all


async def test_a_task_that_loses_a_cancellation_is_cancelled_again() -> None:
    """Like a loop whose ``asyncio.wait_for`` swallowed the cancellation (Python 3.11)."""
    lost: list[int] = []

    async def loses_the_first() -> None:
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if not lost:
                    lost.append(1)
                    continue
                raise

    async def fails() -> None:
        raise RuntimeError("crashed before the stop")

    stubborn, crashed = asyncio.create_task(loses_the_first()), asyncio.create_task(fails())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all([stubborn, crashed]), timeout=5)
    assert lost == [1], "the first cancellation was lost"
    assert stubborn.cancelled()
    assert isinstance(crashed.exception(), RuntimeError)
