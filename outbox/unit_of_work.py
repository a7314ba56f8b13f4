"""One transaction for a service's own writes, its outgoing messages and its inbox.

Either everything a handler did commits together (its rows, the messages it
wants published, the proof that it processed its input) or nothing does. The
relay publishes the messages only after the commit, so a rolled-back
transaction never reaches the broker.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from opentelemetry import propagate
from pydantic import BaseModel
from sqlalchemy import Update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, select

from contracts.ids import new_id
from contracts.wire import utc_now
from outbox.database import Database
from outbox.errors import AlreadyProcessedError, DatabaseError
from outbox.sqlalchemy_statements import write
from outbox.staged_writes import Committed, StagedWrites
from outbox.tables import InboxEntry


class UnitOfWork:
    """Use as ``async with UnitOfWork(db) as uow:``; commits on a clean exit, else rolls back.

    ``uow.session`` is the SQLAlchemy session for the service's own writes. It is
    made when first asked for (most units only stage rows for group commit and never
    need one), and its connection is taken at the first statement, so slow work done
    before that does not hold the database (this matters on SQLite, which has one
    writer).
    """

    def __init__(self, db: Database, *, wait: bool = True) -> None:
        """``wait=False`` is for rows a crash may lose without harm because they can be
        derived again (the outcome of a request that an inbox answers once): if the unit
        only inserts and updates rows, it commits without waiting, with the next shared
        transaction or alone a moment later (`GroupCommit.defer`), written by the time
        the units committed after it through group commit are. Anything else (messages,
        inbox entries, claims, statements) commits as usual."""
        self._db = db
        self._wait = wait
        self._session: AsyncSession | None = None
        self._entered = False
        self._staged = StagedWrites()
        self._done = False

    @property
    def is_sqlite(self) -> bool:
        """Whether the transaction runs on SQLite (some statements differ by dialect)."""
        return self._db.is_sqlite

    @property
    def session(self) -> AsyncSession:
        """The transaction's session, for the service's own rows."""
        self._require_entered()
        if self._session is None:
            self._session = self._db.session()
        return self._session

    def _require_entered(self) -> None:
        if not self._entered:
            raise RuntimeError("use the unit of work inside 'async with'")

    async def __aenter__(self) -> Self:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None and not self._done:
                await self.commit()
        finally:
            if self._session is not None:
                await self._session.close()  # rolls back whatever was not committed

    def publish(
        self,
        subject: str,
        payload: bytes | BaseModel,
        *,
        message_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Stage a message to publish after commit; return its id (its ``Nats-Msg-Id``).

        Give a deterministic ``message_id`` when the same logical message could
        be written twice (a retried handler): the broker then keeps one copy.
        """
        data = payload.model_dump_json().encode() if isinstance(payload, BaseModel) else payload
        mid = message_id or new_id()
        headers = dict(headers or {})
        # The trace of whatever writes the message continues in whoever consumes it.
        propagate.inject(headers)
        self._staged.outbox.append(
            {
                "message_id": mid,
                "subject": subject,
                "payload": data,
                "headers": headers,
                "created_at": utc_now(),
                "attempts": 0,
                "producer": self._db.producer,
            }
        )
        return mid

    async def processed(self, consumer: str, key: str) -> InboxEntry | None:
        """The inbox entry if ``consumer`` already processed ``key``, else None."""
        try:
            row = await self.session.execute(
                select(InboxEntry).where(InboxEntry.consumer == consumer, InboxEntry.key == key)
            )
        except sa_exc.SQLAlchemyError as exc:
            raise DatabaseError(f"reading the inbox failed: {exc}") from exc
        return row.scalar_one_or_none()

    def mark_processed(self, consumer: str, key: str, result: bytes | None = None) -> None:
        """Record that ``consumer`` processed ``key`` (ending any claim on it), with the rest."""
        self._staged.inbox.append(
            {"consumer": consumer, "key": key, "processed_at": utc_now(), "result": result}
        )

    def end_claim(self, consumer: str, key: str) -> None:
        """End any claim on ``key`` at ``consumer`` when this commits (it is not processed)."""
        self._staged.ended_claims.append((consumer, key))

    def update(self, statement: Update, params: dict[str, Any]) -> None:
        """Run ``statement`` with ``params`` when this commits (after the inserts); give the same
        statement object each time so that concurrent units share one execution."""
        self._staged.updates.append((statement, params))

    def insert(self, model: type[SQLModel], values: dict[str, Any]) -> None:
        """Insert a row of ``model``'s table with these column values when this commits;
        cheaper than ``session.add`` (no session, no model instance is built)."""
        self._staged.insert(model, values)

    async def commit(self) -> None:
        """Write the staged rows, then commit.

        Raises `AlreadyProcessedError` if another delivery of an input marked
        processed here committed first; nothing of this transaction is kept then.
        """
        if self._done:
            raise RuntimeError("this unit of work has already committed")
        self._require_entered()
        session = self._session
        staged = self._staged
        committed: list[Committed] = []
        if session is None or _untouched(session):
            if staged.empty:
                pass  # nothing to write
            elif self._wait or staged.awaited:
                committed = (await self._db.group.commit(staged)).committed
            else:
                self._db.group.defer(staged)
        else:
            try:
                committed = (
                    await session.run_sync(write, [staged], is_sqlite=self._db.is_sqlite)
                ).committed
                await session.commit()
            except AlreadyProcessedError:
                await session.rollback()
                raise
            except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError) as exc:
                await session.rollback()
                raise DatabaseError(f"commit failed on {self._db.safe_url}: {exc}") from exc
        self._done = True
        if committed:
            self._db.notify_committed(committed)


def _untouched(session: AsyncSession) -> bool:
    """Whether the session ran no statement and holds no ORM changes (group commit can take
    the unit's staged rows)."""
    return not (session.in_transaction() or session.new or session.dirty or session.deleted)
