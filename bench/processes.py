"""Durable tool calls per second with the no-op tool served by 1, 2 or 4 processes.

Each process is its own ``ballast run bench.noop_app:noop`` on one database and one
embedded nats-server, and the replicas share the tool's durable consumer. This process
plays the agent: it publishes the calls as bench.tool_calls does and stops the clock at
the last result. A run counts only if each call ran exactly once (every call came back
ok with its own n, and the tool's inbox holds one row per call and no more) and every
replica took a share of the calls (its /metrics counted some).

Several processes need PostgreSQL: Ballast supports one process per SQLite file (its
relay takes no row locks there, see docs/services.md), so SQLite is measured with one.

``python -m bench.processes`` prints the figures (median of BALLAST_BENCH_RUNS runs);
BALLAST_BENCH_SCALE multiplies the 2,000 calls of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url

from bench.calls import check_inbox, run_calls
from bench.common import ROOT, Figure, fresh_broker, repeat
from bench.databases import postgres_available, postgres_database, sqlite_database
from bench.noop_app import TARGET, noop
from contracts.subjects import Stream
from services.embedded import EmbeddedNats
from services.identity import SigningKey

CALLS = max(100, int(2000 * float(os.environ.get("BALLAST_BENCH_SCALE", "1.0"))))
DATABASES = {"SQLite": sqlite_database, "PostgreSQL": postgres_database}
READY_TIMEOUT_S = 60.0
"""Start-up of every process, imports included (several start at once on 2 cores)."""
STOP_TIMEOUT_S = 30.0
"""SIGTERM drains for up to BALLAST_SHUTDOWN_GRACE_S (20 s); after this, SIGKILL."""


@dataclass(frozen=True, slots=True)
class Served:
    """Running replicas of the no-op tool, and the key their trusted principals are signed with."""

    key: SigningKey
    pids: list[int]
    ports: list[int]
    """Each replica's /health and /metrics."""


@dataclass(frozen=True, slots=True)
class _Replica:
    proc: asyncio.subprocess.Process
    port: int
    log: Path


@asynccontextmanager
async def tool_processes(
    server: EmbeddedNats, database_url: str, processes: int
) -> AsyncIterator[Served]:
    """``processes`` replicas of the no-op tool, each healthy and pulling from the shared
    consumer before the block starts; SIGTERM and wait when it ends, also on error."""
    if processes > 1 and make_url(database_url).get_backend_name() == "sqlite":
        raise ValueError("Ballast runs one process per SQLite file; use PostgreSQL for more")
    key = SigningKey.generate()
    replicas: list[_Replica] = []
    with tempfile.TemporaryDirectory(prefix="ballast-processes-") as tmp:
        try:
            for i, port in enumerate(_free_ports(processes)):
                env = _env(server, database_url, key, Path(tmp) / f"tool-{i}", port)
                log = Path(tmp) / f"tool-{i}.log"
                replicas.append(_Replica(await spawn_service(TARGET, env, log), port, log))
            await _until_ready(server, replicas)
            yield Served(key, [r.proc.pid for r in replicas], [r.port for r in replicas])
        finally:
            await stop_processes([r.proc for r in replicas])


def _free_ports(count: int) -> list[int]:
    # All sockets stay bound until every port is chosen, so no two replicas get the same.
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _env(
    server: EmbeddedNats, database_url: str, key: SigningKey, data_dir: Path, port: int
) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")} | {
        "BALLAST_NATS_URL": server.url,
        "BALLAST_DATABASE_URL": database_url,
        "BALLAST_DATA_DIR": str(data_dir),
        "BALLAST_LOG_LEVEL": "warning",
        "BALLAST_TRUSTED_KEYS": f'["{key.public_key}"]',
        "BALLAST_HTTP_PORT": str(port),
    }


async def spawn_service(target: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """``ballast run target`` as a process of its own, its output appended to ``log``."""
    with log.open("a") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "run", target,
            cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


async def _until_ready(server: EmbeddedNats, replicas: list[_Replica]) -> None:
    """Every replica answers /health (it has started its consumer and relay), then the
    consumer has a pull request waiting from each: none joins after the clock starts."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        for replica in replicas:
            healthy = partial(_healthy, http, replica.port)
            await poll(healthy, f"port {replica.port}", partial(_exited, replicas))
    nc = await nats.connect(server.url)
    try:
        all_pulling = partial(
            pulling, nc.jetstream(), Stream.TOOLS.value, noop.service, len(replicas)
        )
        what = f"{len(replicas)} pull requests on {noop.service}"
        await poll(all_pulling, what, partial(_exited, replicas))
    finally:
        await nc.close()


async def poll(
    ready: Callable[[], Awaitable[bool]],
    what: str,
    exited: Callable[[], str | None] = lambda: None,
) -> None:
    """Wait until ``ready()``; fail after READY_TIMEOUT_S, or at once with what ``exited()``
    says when a process the wait depends on has ended."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await ready():
        if (ended := exited()) is not None:
            raise RuntimeError(ended)
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {READY_TIMEOUT_S:.0f} s: {what}")
        await asyncio.sleep(0.2)


def _exited(replicas: list[_Replica]) -> str | None:
    for replica in replicas:
        if replica.proc.returncode is not None:
            tail = replica.log.read_text(errors="replace")[-2000:]
            return f"a tool process exited ({replica.proc.returncode}):\n{tail}"
    return None


async def _healthy(http: httpx.AsyncClient, port: int) -> bool:
    try:
        response = await http.get(f"http://127.0.0.1:{port}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def pulling(js: JetStreamContext, stream: str, consumer: str, replicas: int) -> bool:
    """Whether ``consumer`` has a pull request waiting from each of ``replicas`` (an idle
    replica keeps one open, for its whole pool)."""
    try:
        info = await js.consumer_info(stream, consumer)
    except (nats.js.errors.NotFoundError, nats.errors.TimeoutError):
        return False
    return (info.num_waiting or 0) >= replicas


async def stop_processes(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM each, wait up to STOP_TIMEOUT_S for it to exit, then SIGKILL."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def tool_calls_by_processes(
    server: EmbeddedNats, database_url: str, processes: int, calls: int
) -> float:
    """Durable tool calls per second with the no-op tool served by ``processes`` replicas."""
    async with tool_processes(server, database_url, processes) as served:
        per_s = await run_calls(server, served.key, calls)
        handled = await _handled_by_replica(served)
    if 0 in handled:
        raise RuntimeError(f"a replica took no calls (calls per replica: {handled})")
    await check_inbox(database_url, calls)
    return per_s


async def _handled_by_replica(served: Served) -> list[float]:
    """Messages each replica handled, from its ballast_messages counter, whatever the outcome."""
    counts = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        for port in served.ports:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            counts.append(
                sum(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "ballast_messages_total"
                    and sample.labels.get("service") == noop.service
                )
            )
    return counts


@asynccontextmanager
async def fresh(database: str) -> AsyncIterator[tuple[EmbeddedNats, str]]:
    """A broker and a database (a key of DATABASES) of one run's own."""
    async with fresh_broker() as server, DATABASES[database]() as url:
        yield server, url


async def calls_per_second(database: str, processes: int, calls: int) -> float:
    """One run of `tool_calls_by_processes` on a broker and a database of its own."""
    async with fresh(database) as (server, url):
        return await tool_calls_by_processes(server, url, processes, calls)


async def main() -> None:
    figures = [("SQLite", 1)]
    if await postgres_available():
        figures += [("PostgreSQL", n) for n in (1, 2, 4)]
    else:
        print("no PostgreSQL server answers: its figures are left out")
    for database, processes in figures:
        name = f"durable tool calls, {CALLS} calls, {processes} process(es), {database}"
        figure = await repeat(
            Figure(name, "calls/s"), partial(calls_per_second, database, processes, CALLS)
        )
        runs = " / ".join(f"{r:.1f}" for r in figure.runs)
        print(f"{figure.name}: {figure.median:.1f} {figure.unit} ({runs})", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
