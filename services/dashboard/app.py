"""The dashboard: a server-rendered page over the journal, the broker and the DLQs.

It can redrive dead letters, so every page needs the admin token: the first visit
to ``/login?token=...`` (or the login form) sets an HTTP-only, same-site cookie
derived from the token, the way notebook servers hand out their first URL.
Posts must also come from the dashboard's own origin.

::

    GET  /                                  services, DLQs, breakers, spend, recent tasks
    GET  /tasks/{task_id}                   a task's waterfall and budget
    GET  /dlq/{service}                     the dead letters of a service
    POST /dlq/{service}/redrive             redrive all of them
    POST /dlq/{service}/{seq}/redrive       redrive one
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

import jinja2
import nats.errors
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from contracts.tasks import TaskStatus
from outbox import Database, DatabaseError
from services.dashboard.broker_link import BrokerLink
from services.dashboard.overview import BrokerView, broker_view, database_view
from services.dashboard.waterfall import waterfall
from services.dead_letters import dead_letter, dead_letters, redrive
from services.errors import BrokerError
from services.trace import trace

COOKIE = "ballast_dashboard"
TEMPLATES = Path(__file__).parent / "templates"


def _session_value(token: str) -> str:
    """What the cookie holds: proof of the token, not the token itself."""
    return hmac.new(token.encode(), b"ballast-dashboard-session", hashlib.sha256).hexdigest()


Handler: TypeAlias = Callable[[Request], Awaitable[Response]]


class _Pages:
    """The handlers, sharing the database, the broker link and the session check."""

    def __init__(self, db: Database, broker: BrokerLink, token: str) -> None:
        self.db = db
        self.broker = broker
        self.token = token
        self.session = _session_value(token)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates = Jinja2Templates(env=env)

    def signed_in(self, request: Request) -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self.session)

    def page(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def error(self, request: Request, message: str, status: int) -> Response:
        return self.page(request, "error.html", {"message": message}, status)

    def guarded(self, handler: Handler) -> Handler:
        """Send visitors without the session cookie to the login page."""

        async def checked(request: Request) -> Response:
            if not self.signed_in(request):
                return RedirectResponse("/login", status_code=303)
            return await handler(request)

        return checked

    async def login(self, request: Request) -> Response:
        given = request.query_params.get("token", "")
        if request.method == "POST":
            given = parse_qs((await request.body()).decode()).get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self.session, httponly=True, samesite="strict")
            return response
        return self.page(request, "login.html", {"wrong": bool(given)}, 401 if given else 200)

    async def _broker_view(self) -> tuple[BrokerView | None, str | None]:
        try:
            return await broker_view(await self.broker.js()), None
        except (BrokerError, nats.errors.Error, OSError) as exc:
            return None, str(exc) or type(exc).__name__

    async def overview(self, request: Request) -> Response:
        filters = {k: request.query_params.get(k) or None for k in ("agent", "status", "user")}
        view, broker_error = await self._broker_view()
        data = await database_view(self.db, **filters)
        return self.page(
            request,
            "overview.html",
            {
                "broker": view,
                "broker_error": broker_error,
                "data": data,
                "filters": filters,
                "statuses": ["running", *(s.value for s in TaskStatus)],
                "redrove": request.query_params.get("redrove"),
            },
        )

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        found = await trace(self.db, task_id)
        if found is None:
            return self.error(request, f"no task {task_id} in the journal", 404)
        return self.page(request, "task.html", {"task": found, "bars": waterfall(found)})

    async def letters(self, request: Request) -> Response:
        service = request.path_params["service"]
        try:
            found = [item async for item in dead_letters(await self.broker.js(), service)]
        except (BrokerError, nats.errors.Error) as exc:
            return self.error(request, str(exc), 503)
        return self.page(request, "letters.html", {"service": service, "letters": found})

    async def redrive(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return self.error(request, "a redrive must come from the dashboard's own page", 403)
        service = request.path_params["service"]
        seq: int | None = request.path_params.get("seq")
        try:
            js = await self.broker.js()
            if seq is None:
                chosen = [item async for item in dead_letters(js, service)]
            else:
                chosen = [await dead_letter(js, seq)]
                if chosen[0].letter.service != service:
                    raise BrokerError(f"dead letter {seq} belongs to {chosen[0].letter.service}")
            for item in chosen:
                await redrive(js, item)
        except (BrokerError, nats.errors.Error) as exc:
            return self.error(request, str(exc), 409)
        return RedirectResponse(f"/?redrove={len(chosen)}", status_code=303)


def dashboard_app(db: Database, broker: BrokerLink, *, token: str) -> Starlette:
    """The ASGI app; ``token`` is the admin token every visitor must present once."""
    pages = _Pages(db, broker, token)
    guarded = pages.guarded

    async def database_down(request: Request, exc: Exception) -> Response:
        return pages.error(request, f"the database did not answer: {exc}", 503)

    return Starlette(
        exception_handlers={DatabaseError: database_down, SQLAlchemyError: database_down},
        routes=[
            Route("/", guarded(pages.overview)),
            Route("/login", pages.login, methods=["GET", "POST"]),
            Route("/tasks/{task_id}", guarded(pages.task)),
            Route("/dlq/{service}", guarded(pages.letters)),
            Route("/dlq/{service}/redrive", guarded(pages.redrive), methods=["POST"]),
            Route("/dlq/{service}/{seq:int}/redrive", guarded(pages.redrive), methods=["POST"]),
        ],
    )
