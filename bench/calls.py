"""Tool calls published as an agent would, and the proof that each ran exactly once.

The calls go to the no-op tool (bench.noop_app) as the agent "bench", for a user whose
principal is signed with the key the tool's host trusts, each with its call id as
``Nats-Msg-Id``. A run counts only if every call came back ok with its own n and the
tool's inbox holds exactly one row per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta

import nats
from nats.aio.msg import Msg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col

from bench.common import rate
from bench.noop_app import noop
from contracts import Principal, ToolCall
from contracts.subjects import Header, result_subject, tool_subject
from contracts.tools import ToolResult, ToolStatus
from contracts.wire import utc_now
from outbox.tables import InboxEntry
from services.embedded import EmbeddedNats
from services.identity import SigningKey, sign_principal
from services.registry import AgentPolicy, AgentRegistry

RESULTS_TIMEOUT_S = 120.0
"""How long a run waits for its last result before it counts the missing ones."""


async def run_calls(server: EmbeddedNats, key: SigningKey, calls: int) -> float:
    """Publish ``calls`` calls to the no-op tool as the agent "bench" for a user signed with
    ``key``; calls per second from the first publish to the last result.

    Raises RuntimeError unless each call came back once or more, ok, with its own n.
    """
    task_id = uuid.uuid4().hex
    results: dict[str, ToolResult] = {}
    all_in = asyncio.Event()

    async def on_result(msg: Msg) -> None:
        # A result published twice (a relay crash between publish and mark) arrives twice.
        result = ToolResult.model_validate_json(msg.data)
        results[result.call_id] = result
        if len(results) == calls:
            all_in.set()

    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        registry = AgentRegistry(js)
        await registry.start()
        await registry.declare("bench", AgentPolicy(tools=(noop.name,)))
        await nc.subscribe(result_subject("bench", task_id), cb=on_result)
        principal = Principal(
            user_id="bench", tenant="bench", expires_at=utc_now() + timedelta(hours=1)
        )
        token = sign_principal(principal, key)
        payloads = [
            ToolCall(
                call_id=f"{task_id}:{i}", tool=noop.name, args={"n": i},
                task_id=task_id, agent="bench", principal=principal,
            ).model_dump_json().encode()
            for i in range(calls)
        ]  # fmt: skip
        started = time.perf_counter()
        acks = [
            await js.publish_async(
                tool_subject(noop.name),
                body,
                headers={Header.MSG_ID: f"{task_id}:{i}", Header.PRINCIPAL: token},
            )
            for i, body in enumerate(payloads)
        ]
        await asyncio.gather(*acks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), RESULTS_TIMEOUT_S)
        per_s = rate(calls, started)
    finally:
        await nc.close()
    _check_results(task_id, calls, results)
    return per_s


def _check_results(task_id: str, calls: int, results: dict[str, ToolResult]) -> None:
    expected = {f"{task_id}:{i}": i for i in range(calls)}
    missing = expected.keys() - results.keys()
    extra = results.keys() - expected.keys()
    wrong = [
        r.call_id
        for r in results.values()
        if r.call_id in expected
        and (r.status is not ToolStatus.OK or r.output != expected[r.call_id])
    ]
    if missing or extra or wrong:
        raise RuntimeError(
            f"of {calls} calls: {len(missing)} without result, {len(wrong)} failed or wrong "
            f"(e.g. {[results[c] for c in wrong[:2]]}), {len(extra)} unknown"
        )


async def check_inbox(database_url: str, calls: int) -> None:
    """Raise unless the tool's inbox holds exactly ``calls`` rows: one per call run, the
    proof each effect was committed once (a second run of a call finds its row and stops)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.scalar(
                select(func.count())
                .select_from(InboxEntry)
                .where(col(InboxEntry.consumer) == noop.service)
            )
    finally:
        await engine.dispose()
    if rows != calls:
        raise RuntimeError(f"{noop.service} has {rows} inbox rows for {calls} calls")
