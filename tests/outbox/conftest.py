"""Fixtures for outbox tests: a database, a JetStream context, a private stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from sqlalchemy import Column, Integer, String, func, select
from sqlmodel import Field, SQLModel, col

from outbox import Database
from services.embedded import EmbeddedNats


class Widget(SQLModel, table=True):
    """A business row written in the same transaction as outbox messages."""

    __tablename__ = "test_widget"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    name: str = Field(sa_column=Column(String(50), nullable=False))


async def widget_count(db: Database, name: str | None = None) -> int:
    """Widgets in the database (with ``name``, if given)."""
    query = select(func.count()).select_from(Widget)
    if name is not None:
        query = query.where(col(Widget.name) == name)
    async with db.session() as session:
        return int(await session.scalar(query) or 0)


@dataclass(frozen=True)
class Bus:
    """A connection and a stream of this test's own, capturing ``<prefix>.>``."""

    nc: Client
    js: JetStreamContext
    stream: str
    prefix: str

    def subject(self, name: str = "x") -> str:
        return f"{self.prefix}.{name}"

    async def stored(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.messages)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.create_app_tables()  # the tests' own tables, such as test_widget
    yield database
    await database.dispose()


async def make_bus(
    server: EmbeddedNats, *, dedup_window_s: float = 120.0, reconnect_forever: bool = False
) -> Bus:
    nc = await nats.connect(server.url, max_reconnect_attempts=-1 if reconnect_forever else 60)
    js = nc.jetstream()
    token = uuid.uuid4().hex[:10]
    stream, prefix = f"T_{token}", f"t{token}"
    await js.add_stream(
        StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=dedup_window_s)
    )
    return Bus(nc, js, stream, prefix)


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    b = await make_bus(nats_server)
    yield b
    await b.js.delete_stream(b.stream)
    await b.nc.close()
