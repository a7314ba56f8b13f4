"""The HTTP endpoint of a service: Prometheus metrics and health.

::

    GET /metrics    FastStream's metrics and Ballast's, in Prometheus' text format
                    (OpenMetrics when the scraper asks for it, gzip when it accepts it)
    GET /health     200 when the broker is connected, the database answers and
                    the relay is alive; 503 with the failing checks otherwise

HEAD is answered as GET without the body. Served by `ServiceHost` when
``BALLAST_HTTP_PORT`` is set; point a Prometheus scrape job and the orchestrator's
liveness probe at it.

It is served as ``prometheus_client.start_http_server`` serves: prometheus_client's
WSGI app on the standard library's threaded WSGI server, on a thread of its own.
Both are loaded by every service already, so a replica carries no web framework and
no ASGI server for two routes (Starlette and uvicorn's HTTP protocol cost an idle
service about 1.7 MB). And the probe stays honest: when the event loop is stuck,
/health still answers, 503 with ``"event_loop"`` as the failing check, instead of
hanging.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from services.errors import ConfigurationError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = structlog.get_logger("ballast.http")

HealthCheck = Callable[[], Coroutine[Any, Any, dict[str, str]]]
"""Returns each check's finding: ``"ok"`` or what is wrong."""

LOOP_TIMEOUT_S = 5.0
"""How long /health waits for the event loop to run the checks (which bound their
own waits below this) before it reports the loop as stuck."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a scrape every few seconds would drown the log."""


class ServiceEndpoint:
    """/metrics of ``registry`` and /health of ``health`` on ``host:port`` (host empty:
    every interface; port 0: a free one), from `start` until `stop`. A /health request
    that `stop` overtakes answers 503, and the checks it asked for are cancelled."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthCheck,
        *,
        host: str,
        port: int,
        loop_timeout_s: float = LOOP_TIMEOUT_S,
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._health = health
        self._loop_timeout_s = loop_timeout_s
        self.host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._pending: set[concurrent.futures.Future[dict[str, str]]] = set()
        self._lock = threading.Lock()
        """Guards ``_pending`` and ``_loop``, which request threads and `stop` share."""

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for)."""
        return int(self._bound()[1])

    @property
    def url(self) -> str:
        host, port = self._bound()[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def _bound(self) -> tuple[Any, ...]:
        if self._server is None:
            raise RuntimeError("the endpoint is not started")
        return tuple(self._server.server_address)

    async def start(self) -> None:
        """Bind and serve; the health checks run on the calling event loop."""
        self._loop = asyncio.get_running_loop()
        # Resolving the host and binding (which looks up the host's name) may wait on DNS.
        self._server = await asyncio.to_thread(self._bind)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ballast-http", daemon=True
        )
        self._thread.start()

    def _bind(self) -> ThreadingWSGIServer:
        try:
            family, *_, address = socket.getaddrinfo(
                self.host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            # prometheus_client's own threaded server (its request threads are daemons, so
            # a scrape in progress does not hold up the process's exit), in the address's
            # family.
            server_class = type("_Server", (ThreadingWSGIServer,), {"address_family": family})
            return make_server(
                str(address[0]), self._port, self._app, server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigurationError(
                f"could not serve HTTP on {self.host or '*'}:{self._port} ({exc}); "
                "check BALLAST_HTTP_HOST, or choose another port with BALLAST_HTTP_PORT"
            ) from exc

    async def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        server, thread = self._server, self._thread
        with self._lock:
            self._loop = None
            for future in self._pending:
                future.cancel()
        # shutdown() waits for the serving loop to notice, up to its poll interval.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path not in ("/metrics", "/health"):
            return _respond(start_response, "404 Not Found", f"no such path: {path}\n".encode())
        if method not in ("GET", "HEAD"):
            answer = f"{path} answers GET\n".encode()
            return _respond(start_response, "405 Method Not Allowed", answer, allow="GET, HEAD")
        if path == "/metrics":
            # prometheus_client's app answers GET only; a HEAD drops its body below.
            body: Iterable[bytes] = self._metrics(
                {**environ, "REQUEST_METHOD": "GET"}, start_response
            )
        else:
            checks = self._checks()
            ok = all(finding == "ok" for finding in checks.values())
            report = json.dumps({"status": "ok" if ok else "unhealthy", "checks": checks})
            status = "200 OK" if ok else "503 Service Unavailable"
            body = _respond(start_response, status, report.encode(), "application/json")
        return [] if method == "HEAD" else body

    def _checks(self) -> dict[str, str]:
        """The health checks, run on the event loop from this request's thread; what keeps
        them from answering is a finding too, never a server error."""
        with self._lock:
            if self._loop is None:
                return {"service": "stopping"}
            future = asyncio.run_coroutine_threadsafe(self._health(), self._loop)
            self._pending.add(future)
        try:
            return future.result(timeout=self._loop_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return {"event_loop": f"did not run the checks within {self._loop_timeout_s}s (stuck?)"}
        except concurrent.futures.CancelledError:
            return {"service": "stopping"}
        except Exception as exc:
            log.exception("health.failed")
            return {"checks": f"could not be run ({type(exc).__name__}; see the log)"}
        finally:
            with self._lock:
                self._pending.discard(future)


def _respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    **headers: str,
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        + [(name.title(), value) for name, value in headers.items()],
    )
    return [body]
