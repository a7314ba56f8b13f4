"""An ASGI app served inside a running process, next to its other work.

uvicorn's ``Server.serve`` takes over SIGINT and SIGTERM; a Ballast process
handles those itself (to drain its consumers and outbox first), so this server
leaves signals alone and is stopped by its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from services.errors import ConfigurationError


class _OwnedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedHttpServer:
    """Serves ``app`` on ``host:port`` (port 0: a free one) until `stop`."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        self._server = _OwnedServer(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
        self._task: asyncio.Task[None] | None = None
        self.host = host

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for)."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        # Bound here rather than by uvicorn, which exits the process when it cannot bind.
        config = self._server.config
        try:
            sock = socket.create_server((config.host, config.port), reuse_port=False)
        except OSError as exc:
            raise ConfigurationError(
                f"could not serve HTTP on {config.host}:{config.port} ({exc}); "
                "choose another port with BALLAST_HTTP_PORT"
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        # uvicorn offers a flag, not an event, for "listening".
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self._task.done():
            await self._task  # raises what stopped it

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
