"""The relay: publishes committed outbox rows to JetStream, then marks them sent.

It selects *unsent* rows (never "rows after the last id seen": ids are assigned
before commit and transactions commit out of order, so that would skip rows),
oldest first, in batches. On PostgreSQL the batch is locked with
``FOR UPDATE SKIP LOCKED`` for the time of the publish, so several relays can
share one table. SQLite has one writer, so one relay per database file; there
the batch is read, published and marked in separate short transactions to keep
the file free for writers during the publish.

A crash between publish and mark-sent leaves the rows unsent: they are
published again with the same ``Nats-Msg-Id`` and the stream drops the copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.wire import utc_now
from outbox.database import Database
from outbox.errors import DatabaseError, PublishError
from outbox.publisher import JetStreamPublisher, Outgoing, Published
from outbox.tables import OutboxMessage

log = structlog.get_logger("ballast.relay")

_T = OutboxMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """How the relay batches and waits."""

    batch_size: int = 500
    """Rows published per round; all of them are in flight at once."""
    sweep_interval_s: float = 1.0
    """Longest wait between rounds when nobody nudges (rows left by a crash, other writers)."""
    max_backoff_s: float = 5.0
    """Longest pause after a failed round (broker or database down)."""


class Relay:
    """Moves outbox rows to the broker. Run `run` as a background task; `nudge` after commits."""

    def __init__(
        self, db: Database, publisher: JetStreamPublisher, config: RelayConfig | None = None
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._config = config or RelayConfig()
        self._wake = asyncio.Event()
        self.published_total = 0
        """Rows marked sent by this relay since it started."""
        self.last_round_at: float | None = None
        """Monotonic time of the last round that completed (the relay's heartbeat)."""

    def nudge(self) -> None:
        """Ask for a round now; cheap, safe to call from any commit."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; failures back off and retry, they never end the loop."""
        backoff = 0.0
        while True:
            self._wake.clear()
            try:
                sent = await self.relay_once()
            except (PublishError, DatabaseError) as exc:
                backoff = min(self._config.max_backoff_s, max(0.05, backoff * 2))
                log.warning("relay.round_failed", error=str(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            self.last_round_at = time.monotonic()
            if sent >= self._config.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.sweep_interval_s)

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were marked sent.

        Raises `PublishError` when rows were found but none could be published.
        """
        try:
            if self._db.is_sqlite:
                return await self._round_unlocked()
            return await self._round_locked()
        except sa_exc.SQLAlchemyError as exc:
            raise DatabaseError(f"relay could not read or mark outbox rows: {exc}") from exc

    async def drain(self, timeout_s: float) -> int:
        """Relay until no unsent row is left or ``timeout_s`` passed; return rows still unsent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            with contextlib.suppress(PublishError, DatabaseError):
                await self.relay_once()
            if await self.unsent_count() == 0:
                return 0
            await asyncio.sleep(0.05)
        return await self.unsent_count()

    async def unsent_count(self) -> int:
        """Rows committed but not yet acknowledged by the broker."""
        count = await self._scalar(select(func.count()).select_from(_T).where(*self._mine()))
        return int(count or 0)

    async def oldest_unsent_at(self) -> datetime | None:
        """When the oldest unsent row was written (the relay's lag), or None."""
        oldest: datetime | None = await self._scalar(
            select(func.min(_T.c.created_at)).where(*self._mine())
        )
        return oldest

    async def _scalar(self, query: Any) -> Any:
        try:
            async with self._db.session() as session:
                return await session.scalar(query)
        except sa_exc.SQLAlchemyError as exc:
            raise DatabaseError(f"could not read the outbox: {exc}") from exc

    def _mine(self) -> list[Any]:
        """Unsent rows this relay publishes: its producer's, and rows of no producer."""
        unsent = _T.c.sent_at.is_(None)
        producer = self._db.producer
        if producer is None:
            return [unsent]
        return [unsent, or_(_T.c.producer == producer, _T.c.producer.is_(None))]

    def _select_unsent(self) -> Any:
        return (
            select(_T.c.id, _T.c.message_id, _T.c.subject, _T.c.payload, _T.c.headers)
            .where(*self._mine())
            .order_by(_T.c.id)
            .limit(self._config.batch_size)
        )

    async def _round_locked(self) -> int:
        async with self._db.session() as session, session.begin():
            rows = (
                await session.execute(self._select_unsent().with_for_update(skip_locked=True))
            ).all()
            if not rows:
                return 0
            results = await self._publisher.publish_batch([_outgoing(r) for r in rows])
            sent = await self._mark(session, rows, results)
        return self._finish_round(rows, sent)

    async def _round_unlocked(self) -> int:
        async with self._db.session() as session:
            rows = (await session.execute(self._select_unsent())).all()
            await session.commit()
        if not rows:
            return 0
        results = await self._publisher.publish_batch([_outgoing(r) for r in rows])
        async with self._db.session() as session, session.begin():
            sent = await self._mark(session, rows, results)
        return self._finish_round(rows, sent)

    async def _mark(self, session: AsyncSession, rows: Any, results: list[Published]) -> int:
        now = utc_now()
        sent_ids = [row.id for row, res in zip(rows, results, strict=True) if res.ok]
        failed = [
            {"b_id": row.id, "b_error": res.error}
            for row, res in zip(rows, results, strict=True)
            if not res.ok
        ]
        if sent_ids:
            await session.execute(
                update(_T).where(_T.c.id.in_(sent_ids)).values(sent_at=now, last_error=None)
            )
        if failed:
            await session.execute(
                update(_T)
                .where(_T.c.id == bindparam("b_id"))
                .values(attempts=_T.c.attempts + 1, last_error=bindparam("b_error")),
                failed,
            )
        return len(sent_ids)

    def _finish_round(self, rows: Any, sent: int) -> int:
        self.published_total += sent
        if sent == 0:
            raise PublishError(f"none of {len(rows)} outbox rows could be published")
        if sent < len(rows):
            log.warning("relay.partial_round", sent=sent, failed=len(rows) - sent)
        return sent


def _outgoing(row: Any) -> Outgoing:
    return Outgoing(
        message_id=row.message_id, subject=row.subject, payload=row.payload, headers=row.headers
    )
