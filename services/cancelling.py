"""Stopping background tasks for good, even when a cancellation is lost.

In Python 3.11, ``asyncio.wait_for`` loses a cancellation that arrives just as
the awaitable it waits for completes (fixed in 3.12): the task goes on as if it
had not been cancelled. nats-py waits for every request that way, so a loop that
refreshes gauges or follows a key-value bucket can survive one ``cancel()`` and
keep its host from stopping. Cancelling again until the task has ended is the
remedy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

RECANCEL_AFTER_S = 0.5


async def cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again any that
    goes on. What they raised is dropped: they were told to stop."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio would log it as never retrieved
