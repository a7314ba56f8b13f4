"""What every command shares: settings, logging, running a coroutine, reporting errors."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from contracts.errors import ContractError
from outbox import Database
from outbox.errors import OutboxError
from services.errors import BallastError, ConfigurationError
from services.keys import resolve_keys
from services.logging import configure_logging
from services.redaction import Redactor
from services.settings import Settings
from services.stack import nats_url_for_tools
from services.telemetry import configure_tracing

if TYPE_CHECKING:
    from services.client import BallastClient

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def load_settings() -> Settings:
    """Settings from the environment; a bad value is reported as a usage error."""
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid BALLAST_* setting:\n{exc}", code=2)
    configure_logging(settings.log_format, settings.log_level, Redactor(settings.secret_values()))
    configure_tracing(settings.tracing, settings.service_name)
    return settings


@asynccontextmanager
async def database() -> AsyncIterator[Database]:
    """The database of BALLAST_DATABASE_URL, closed when the block ends."""
    db = Database(load_settings().resolved_database_url())
    try:
        yield db
    finally:
        await db.dispose()


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``. Plain text through Typer: rich
    would read brackets in the message as its markup, and ``ballast run`` leaves it out."""
    color = False if os.environ.get("NO_COLOR") else None  # None: colour on a terminal only
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}", err=True, color=color)
    raise typer.Exit(code)


_REPORTED = (ValidationError, ContractError, BallastError, OutboxError)
"""Errors shown as one message instead of a traceback."""


def report(exc: Exception) -> NoReturn:
    """Exit with ``exc``'s message: code 2 for bad input or configuration, 1 otherwise."""
    if isinstance(exc, ValidationError):
        fail(f"invalid input:\n{exc}", code=2)
    fail(str(exc), code=2 if isinstance(exc, ContractError | ConfigurationError) else 1)


@contextmanager
def reported() -> Iterator[None]:
    """Report Ballast's errors raised in the block (see `report`)."""
    try:
        yield
    except _REPORTED as exc:
        report(exc)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``, reporting Ballast's errors (see `report`)."""
    try:
        return asyncio.run(coro)
    except _REPORTED as exc:
        report(exc)


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def client_for(settings: Settings) -> BallastClient:
    """A client for the configured (or local) broker that signs with the configured key."""
    # Imported here: commands that only read the database skip the broker libraries.
    from services.broker import NatsCredentials
    from services.client import BallastClient

    return BallastClient(
        nats_url_for_tools(settings),
        signer=resolve_keys(settings).signer,
        principal_ttl=timedelta(seconds=settings.principal_ttl_s),
        credentials=NatsCredentials.of(settings),
    )
