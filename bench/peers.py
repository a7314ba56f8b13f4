"""Peers measured on the same machine with the same shape of work as a durable tool call.

Each function returns calls per second for ``count`` calls, as bench.tool_calls does for
Ballast: a call goes out, a consumer runs the no-op ``f(n) -> n``, its result comes back,
and the clock stops when the caller has the last result. Every peer runs in this process
against the same kind of embedded nats-server or PostgreSQL database, and every run
checks that each call ran exactly once and returned its own n, so a fast wrong answer
cannot pass for a figure.

taskiq, taskiq-nats and dbos come with the 'bench' extra (``pip install -e '.[bench]'``).
They are imported inside the functions so that bench/ still imports and type-checks
without them.

``python -m bench.peers`` measures each peer BALLAST_BENCH_RUNS times (default 3) with
2,000 calls (times BALLAST_BENCH_SCALE).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import Any

import nats
from faststream.nats import JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.js.errors import BadRequestError
from sqlalchemy import make_url

from bench.common import Figure, fresh_broker, rate, repeat
from bench.databases import postgres_available, postgres_database
from bench.noop_app import POOL
from services.embedded import EmbeddedNats
from services.pull_flow import flow_controlled

RESULTS_TIMEOUT_S = 120.0
"""How long a run waits for its last result before it counts the missing ones."""


def _call(n: int) -> bytes:
    """A call of about 250 bytes, like bench.raw_nats.PAYLOAD, that carries its own n."""
    return json.dumps({"call_id": f"x:{n}", "tool": "noop", "args": {"n": n}}).encode().ljust(250)


def _verify(peer: str, count: int, values: list[int]) -> None:
    """Raise unless each of 0 .. count-1 is in ``values`` exactly once."""
    tally = Counter(values)
    missing = sum(1 for n in range(count) if n not in tally)
    extra = {n: k for n, k in tally.items() if k > 1 or not 0 <= n < count}
    if missing or extra:
        unexpected = dict(list(extra.items())[:5])
        raise RuntimeError(f"{peer}: {missing} of {count} calls missing, unexpected {unexpected}")


async def faststream_plain_rate(server: EmbeddedNats, count: int) -> float:
    """FastStream's NatsBroker with no database: a JetStream queue and a handler, nothing
    durable about the work itself, as a ceiling for a framework on the same broker.

    Settings: a durable pull consumer on a stream of its own with ``PullSub(batch_size=64)``
    and no ``max_workers``: each fetch takes up to 64 messages and runs one handler call per
    message, all at once, then fetches again (so at most 64 at a time, as Ballast's pool;
    adding ``max_workers=64`` measured about half as fast). FastStream acks after the
    handler returns (its default for pull consumers), ``logger=None`` drops its
    per-message log lines, ``apply_types=False`` its FastDepends validation; the handler's
    return value goes out on core NATS through a publisher. The caller publishes with
    nats-py ``publish_async`` (acked, with ``Nats-Msg-Id``, as bench.tool_calls does) and
    counts results on a core NATS subscription.
    """
    broker = NatsBroker(server.url, logger=None, apply_types=False)
    return await faststream_rate(server, count, broker, pull_sub=PullSub(batch_size=POOL))


async def faststream_rate(
    server: EmbeddedNats,
    count: int,
    broker: NatsBroker,
    *,
    flow_control: bool = False,
    **subscribed: Any,
) -> float:
    """Calls per second through ``broker``'s JetStream handler of the no-op, its consumer
    made with the ``subscribed`` options (see `faststream_plain_rate` for the shape) and
    pulled as a Ballast service pulls if ``flow_control``."""
    prefix = f"fs{uuid.uuid4().hex[:8]}"
    subscriber = serve_noop(
        broker, prefix, JStream(noop_stream(prefix), subjects=[f"{prefix}.call"]), **subscribed
    )
    if flow_control:
        flow_controlled(subscriber)
    await broker.start()
    try:
        return await drive_noop(server, prefix, count)
    finally:
        await broker.stop()


def noop_stream(prefix: str) -> str:
    """The stream of the calls published to ``<prefix>.call``."""
    return f"FS_{prefix}"


def serve_noop(
    broker: NatsBroker,
    prefix: str,
    stream: JStream,
    on_call: Callable[[], None] = lambda: None,
    **subscribed: Any,
) -> Any:
    """Subscribe ``broker`` to the calls on ``<prefix>.call`` (durable consumer ``bench``):
    the no-op answers each on ``<prefix>.result`` over core NATS (and calls ``on_call``).
    Returns the subscriber."""

    async def noop(call: dict[str, Any]) -> dict[str, Any]:
        on_call()
        return {"call_id": call["call_id"], "n": call["args"]["n"]}

    subscriber = broker.subscriber(f"{prefix}.call", stream=stream, durable="bench", **subscribed)
    subscriber(broker.publisher(f"{prefix}.result")(noop))
    return subscriber


async def drive_noop(server: EmbeddedNats, prefix: str, count: int) -> float:
    """Publish ``count`` calls to ``<prefix>.call`` (acked, with ``Nats-Msg-Id``), wait for
    their results on ``<prefix>.result``; calls per second, each checked to be answered once."""
    nc = await nats.connect(server.url)
    results: list[int] = []
    all_in = asyncio.Event()

    async def on_result(msg: Msg) -> None:
        results.append(json.loads(msg.data)["n"])
        if len(results) >= count:
            all_in.set()

    try:
        await nc.subscribe(f"{prefix}.result", cb=on_result)
        await nc.flush()
        js = nc.jetstream(publish_async_max_pending=4000)
        payloads = [_call(i) for i in range(count)]
        started = time.perf_counter()
        acks = [
            await js.publish_async(f"{prefix}.call", body, headers={"Nats-Msg-Id": f"{prefix}:{i}"})
            for i, body in enumerate(payloads)
        ]
        await asyncio.gather(*acks)
        with suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), RESULTS_TIMEOUT_S)
        result = rate(count, started)
    finally:
        await nc.close()
    _verify("faststream", count, results)
    return result


def _consumer_limit(exc: BaseException | None) -> bool:
    """Whether nats-server refused a consumer because its stream has 1,000 already."""
    return isinstance(exc, BadRequestError) and exc.err_code == 10026


async def taskiq_nats_rate(server: EmbeddedNats, count: int) -> float:
    """taskiq with taskiq-nats: durable JetStream delivery, results in NATS, a worker in process.

    Settings: ``PullBasedJetStreamBroker`` (a durable pull consumer on a stream of its own,
    ``pull_consume_batch=64``; taskiq acks a message once its result is saved, its
    default), the result backend is taskiq-nats' only one, ``NATSObjectStoreResultBackend``
    (an object store bucket: taskiq-nats has no KV result backend), and the worker is
    taskiq's ``Receiver``, the loop ``taskiq worker`` runs, as an asyncio task with
    ``max_async_tasks=64``. Caller and worker have a broker and connections each, as two
    processes would. The caller ``kiq``s every call at once, then awaits ``wait_result()``
    (which polls every 0.2 s) for 64 of them at a time.

    Each read of a result opens an ephemeral consumer on the bucket's stream (nats-py's
    object store get), and nats-server keeps it for its 5 s inactive threshold; wait_result
    reads twice, and nats-server refuses a stream's 1,001st consumer. A wait refused for
    that reason is retried 0.2 s later, so this figure is bound by how fast the backend
    lets results be read, not by the worker.
    """
    from taskiq.exceptions import ResultBackendError
    from taskiq.receiver import Receiver
    from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

    prefix = f"tq{uuid.uuid4().hex[:8]}"

    def broker() -> PullBasedJetStreamBroker:
        return PullBasedJetStreamBroker(
            server.url,
            subject=f"{prefix}.call",
            stream_name=f"TQ_{prefix}",
            durable="bench",
            pull_consume_batch=POOL,
        ).with_result_backend(NATSObjectStoreResultBackend(server.url, bucket_name=prefix))

    client, worker = broker(), broker()
    ran: list[int] = []

    async def noop(n: int) -> int:
        ran.append(n)
        return n

    call = client.register_task(noop, task_name="noop")
    worker.register_task(noop, task_name="noop")
    await worker.startup()
    await client.startup()
    finish = asyncio.Event()
    receiver = Receiver(worker, max_async_tasks=POOL, run_startup=False)
    listening = asyncio.create_task(receiver.listen(finish))
    try:
        started = time.perf_counter()
        tasks = await asyncio.gather(*(call.kiq(i) for i in range(count)))
        waiting = asyncio.Semaphore(POOL)

        async def wait(task: Any) -> Any:
            async with waiting:
                while True:
                    try:
                        return await task.wait_result()
                    except ResultBackendError as exc:
                        if not _consumer_limit(exc.__cause__):
                            raise
                    await asyncio.sleep(0.2)

        done = await asyncio.wait_for(
            asyncio.gather(*(wait(task) for task in tasks)), RESULTS_TIMEOUT_S
        )
        result = rate(count, started)
    finally:
        finish.set()
        await listening
        await client.shutdown()
        await worker.shutdown()
    _verify("taskiq (runs)", count, ran)
    _verify("taskiq (results)", count, [r.return_value for r in done if not r.is_err])
    return result


async def dbos_rate(database_url: str, count: int) -> float:
    """DBOS Transact on PostgreSQL: each call a workflow of one step, both checkpointed.

    Settings: the system database is ``database_url`` itself (DBOS adds its ``dbos``
    schema), driven through psycopg as DBOS requires, with DBOS's default pool of 20
    connections. All ``count`` workflows are started at once with
    ``DBOS.start_workflow_async`` on the caller's loop, DBOS's direct way to run async
    workflows, and their results awaited. (Starting 64 at a time measured the same; a DBOS
    queue with ``worker_concurrency=64`` and a 0.05 s polling interval about a third as fast,
    since its workers find new work by polling the database.)

    DBOS is a process-wide singleton with threads of its own, and it makes its executor the
    running loop's default one; so it runs here on a thread and event loop of its own,
    launched and destroyed (registry included) per run: repeated runs start clean and leave
    neither threads nor a changed loop behind.
    """
    url = make_url(database_url).set(drivername="postgresql+psycopg")
    return await asyncio.to_thread(_dbos_run, url.render_as_string(hide_password=False), count)


def _dbos_run(url: str, count: int) -> float:
    from dbos import DBOS

    ran: list[int] = []

    async def noop(n: int) -> int:
        ran.append(n)
        return n

    step: Callable[[int], Awaitable[int]] = DBOS.step()(noop)

    async def call(n: int) -> int:
        return await step(n)

    workflow = DBOS.workflow()(call)
    try:
        DBOS(
            config={
                "name": "ballast-bench",
                "system_database_url": url,
                "application_version": "bench",
                "log_level": "WARNING",
            }
        )
        DBOS.launch()

        async def run() -> tuple[float, list[int]]:
            started = time.perf_counter()
            handles = await asyncio.gather(
                *(DBOS.start_workflow_async(workflow, i) for i in range(count))
            )
            values = await asyncio.wait_for(
                asyncio.gather(*(h.get_result() for h in handles)), RESULTS_TIMEOUT_S
            )
            return rate(count, started), list(values)

        result, values = asyncio.run(run())
    finally:
        DBOS.destroy(destroy_registry=True)
    _verify("dbos (runs)", count, ran)
    _verify("dbos (results)", count, values)
    return result


async def measure(calls: int) -> list[Figure]:
    """Every peer, `RUNS` times each, on a broker and databases of their own."""
    async with fresh_broker() as server:
        figures = [
            await repeat(
                Figure(
                    "peer: FastStream JetStream handler, no durability",
                    "calls/s",
                    note="PullSub(batch_size=64), logger=None, result on core NATS",
                ),
                partial(faststream_plain_rate, server, calls),
            ),
            await repeat(
                Figure(
                    "peer: taskiq + taskiq-nats",
                    "calls/s",
                    note="PullBasedJetStreamBroker, object store results, 64 async tasks",
                ),
                partial(taskiq_nats_rate, server, calls),
            ),
        ]
    if await postgres_available():

        async def dbos_once() -> float:
            async with postgres_database() as url:
                return await dbos_rate(url, calls)

        dbos = Figure(
            "peer: DBOS Transact, workflow of one step, PostgreSQL",
            "calls/s",
            note="start_workflow_async for all, results awaited together",
        )
        figures.append(await repeat(dbos, dbos_once))
    return figures


def main() -> None:
    """``python -m bench.peers [--json]``: print each peer's figure, or all of them as JSON."""
    calls = max(100, int(2_000 * float(os.environ.get("BALLAST_BENCH_SCALE", "1.0"))))
    figures = asyncio.run(measure(calls))
    if "--json" in sys.argv[1:]:
        print(json.dumps([dataclasses.asdict(f) for f in figures]))
        return
    for figure in figures:
        runs = " / ".join(f"{r:,.0f}" for r in figure.runs)
        print(f"{figure.name}: median {figure.median:,.0f} {figure.unit} (runs {runs})")


if __name__ == "__main__":
    main()
