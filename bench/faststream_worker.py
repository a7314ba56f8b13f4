"""One process serving the no-op on FastStream as Ballast configures it, no database.

``python -m bench.faststream_worker NATS_URL PREFIX`` consumes the calls on
``PREFIX.call`` (their stream is made beforehand, see `bench.peers.noop_stream`),
prints ``ready`` once its broker has started, and on SIGTERM stops and prints
``handled N``. bench.floors runs several of them: the floor of several tool processes.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from faststream.nats import JStream

from bench.floors import configured_broker, configured_consumption
from bench.peers import noop_stream, serve_noop
from services.pull_flow import flow_controlled


async def serve(url: str, prefix: str) -> None:
    broker = configured_broker(url)
    handled = 0

    def count() -> None:
        nonlocal handled
        handled += 1

    stream = JStream(noop_stream(prefix), declare=False)
    flow_controlled(serve_noop(broker, prefix, stream, count, **configured_consumption()))
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await broker.start()
    print("ready", flush=True)
    await stopping.wait()
    await broker.stop()
    print(f"handled {handled}", flush=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
