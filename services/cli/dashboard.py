"""``ballast dashboard``: serve the web dashboard."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from outbox import Database
from services.cli.common import client_for, fail, load_settings, run, until_stopped
from services.cli.console import console


def dashboard(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8080,
) -> None:
    """Serve the dashboard: services, DLQs (with redrive), breakers, spend, tasks, timelines.

    Visitors sign in with BALLAST_ADMIN_TOKEN. In development without one, a
    token is made for this run and printed in the URL to open.
    """
    settings = load_settings()
    if settings.admin_token is not None:
        token, shown = settings.admin_token.get_secret_value(), ""
    elif settings.env == "development":
        token = secrets.token_urlsafe(24)
        shown = token
    else:
        fail("set BALLAST_ADMIN_TOKEN: the dashboard can redrive messages, so it needs one", code=2)

    from services.dashboard import BrokerLink, dashboard_app  # web libraries: only here
    from services.http_server import EmbeddedHttpServer

    async def main() -> None:
        db = Database(settings.resolved_database_url())
        broker = BrokerLink(lambda: client_for(settings))
        server = EmbeddedHttpServer(dashboard_app(db, broker, token=token), host=host, port=port)
        await server.start()
        login = f"{server.url}/login" + (f"?token={shown}" if shown else "")
        console.print(f"dashboard on {server.url} (Ctrl-C to stop); open:")
        console.print(login, soft_wrap=True, highlight=False)
        try:
            await until_stopped()
        finally:
            await server.stop()
            await broker.close()
            await db.dispose()

    run(main())
