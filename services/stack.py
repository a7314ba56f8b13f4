"""The local stack: an embedded nats-server when no broker is configured.

``ballast up`` writes the embedded server's URL to ``<data_dir>/nats.url`` so
that other commands in another terminal (``ballast publish``, ``ballast dlq``,
``ballast status``) find it without configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from services.embedded import EmbeddedNats
from services.errors import ConfigurationError
from services.settings import Settings


def url_file(settings: Settings) -> Path:
    return settings.data_dir / "nats.url"


@asynccontextmanager
async def local_stack(settings: Settings) -> AsyncIterator[Settings]:
    """Yield settings with a reachable NATS URL, starting an embedded server if none is set."""
    if not settings.embedded_nats:
        yield settings
        return
    async with EmbeddedNats(settings.data_dir / "nats") as server:
        url_file(settings).write_text(server.url + "\n", encoding="utf-8")
        try:
            yield settings.model_copy(update={"nats_url": server.url})
        finally:
            with suppress(OSError):
                url_file(settings).unlink()


def nats_url_for_tools(settings: Settings) -> str:
    """The URL command-line tools connect to: configured, or the running local stack's."""
    if settings.nats_url:
        return settings.nats_url
    try:
        return url_file(settings).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(
            "no broker to talk to: start 'ballast up' in another terminal, or set BALLAST_NATS_URL"
        ) from None
