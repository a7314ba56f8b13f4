"""Graceful shutdown of a real 'ballast run' process on SIGTERM.

Within the grace period an in-flight call finishes and its result is published
before the process exits; past it the call is handed back (nak) and another
replica runs it at once instead of after the ack wait, still exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from sqlalchemy import func, select
from sqlmodel import col

from contracts import ToolResult, ToolStatus
from contracts.subjects import Stream, result_subject
from outbox import Database
from outbox.tables import Claim
from services.embedded import EmbeddedNats
from tests.helpers import eventually, subject_count, unique
from tests.procs.chaos_app import effects_per_ref
from tests.services.callers import caller_call, publish_call
from tests.services.test_crashes import Service, consumer_ready, service_env

TARGET = "tests.procs.chaos_app:slow_effect"


def _running(database_url: str) -> Callable[[], Awaitable[bool]]:
    """True once a replica runs the call (it holds the claim), not merely fetched it."""

    async def check() -> bool:
        db = Database(database_url)
        try:
            async with db.session() as session:
                query = select(func.count()).where(col(Claim.consumer) == "tool-slow_effect")
                return int((await session.execute(query)).scalar_one()) == 1
        finally:
            await db.dispose()

    return check


async def _effects(database_url: str, ref: str) -> int:
    return (await effects_per_ref(database_url)).get(ref, 0)


async def _call(js: JetStreamContext, seconds: float) -> tuple[str, str]:
    ref = unique("nap")
    call = caller_call("slow_effect", call_id=f"{ref}:1").model_copy(
        update={"args": {"ref": ref, "seconds": seconds}}
    )
    await publish_call(js, call)
    return ref, result_subject(call.agent, call.task_id)


async def _stop(service: Service) -> float:
    """SIGTERM; return how long the process took to exit."""
    assert service.proc is not None
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(service.proc.wait(), 30)
    assert code == 0, f"exit code {code}"
    return time.monotonic() - started


async def test_sigterm_lets_the_call_in_flight_finish_and_publish_its_result(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    env = service_env(own_nats.url, database_url, tmp_path / "a") | {
        "BALLAST_SHUTDOWN_GRACE_S": "10",
        "BALLAST_ACK_WAIT_S": "30",
    }
    replica = Service(TARGET, env, tmp_path / "a.log")
    await replica.start()
    client = await nats.connect(own_nats.url)
    try:
        js = client.jetstream()
        await eventually(
            partial(consumer_ready, js, Stream.TOOLS, "tool-slow_effect"),
            timeout_s=30,
            what="the tool to start",
        )
        ref, results = await _call(js, seconds=2.0)
        await eventually(_running(database_url), what="the call to be running")
        took = await _stop(replica)
        assert took >= 1.0, "it waited for the call"
        assert took < 10, "and no longer than needed"
        assert await _effects(database_url, ref) == 1
        assert await subject_count(js, Stream.RESULTS.value, results) == 1, "result published"
        raw = await js.get_last_msg(Stream.RESULTS.value, results)
        assert raw.data is not None
        assert ToolResult.model_validate_json(raw.data).status is ToolStatus.OK
    finally:
        await client.close()
        await replica.stop()


async def test_past_the_grace_period_the_call_is_handed_back_and_runs_once_elsewhere(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    env = service_env(own_nats.url, database_url, tmp_path / "a") | {
        "BALLAST_SHUTDOWN_GRACE_S": "0.5",
        "BALLAST_ACK_WAIT_S": "60",
    }
    first = Service(TARGET, env, tmp_path / "first.log")
    await first.start()
    client = await nats.connect(own_nats.url)
    second = Service(TARGET, env, tmp_path / "second.log")
    try:
        js = client.jetstream()
        await eventually(
            partial(consumer_ready, js, Stream.TOOLS, "tool-slow_effect"),
            timeout_s=30,
            what="the tool to start",
        )
        ref, results = await _call(js, seconds=4.0)
        await eventually(_running(database_url), what="the call to be running")
        took = await _stop(first)
        assert took < 4.0, "it did not wait for the whole call"
        assert await _effects(database_url, ref) == 0, "the stopped call left nothing"
        handed_back = time.monotonic()
        await second.start()
        await eventually(
            lambda: _has_result(js, results), timeout_s=30, what="the call to run on the replica"
        )
        assert time.monotonic() - handed_back < 30, "well before the 60 s ack wait"
        assert await _effects(database_url, ref) == 1, "exactly once"
    finally:
        await client.close()
        await second.stop()


async def _has_result(js: JetStreamContext, subject: str) -> bool:
    return await subject_count(js, Stream.RESULTS.value, subject) == 1
