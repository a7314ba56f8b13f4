"""A shared write's statements through SQLAlchemy, on a synchronous connection or session.

Used by a unit of work that writes through its own session (group commit's writers
call their drivers directly, `outbox.writers`); SQLite's also runs the claim upsert
built here. The statements are built once: SQLAlchemy then finds their compiled form without working
out a cache key for a new statement object at every shared transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Table, Update, bindparam, delete, insert, select, tuple_, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from outbox.admission import ClaimRequest
from outbox.conflict_insert import conflict_insert
from outbox.errors import AlreadyProcessedError
from outbox.staged_writes import StagedWrites, Written, write_staged
from outbox.tables import Claim, InboxEntry, OutboxMessage

Executor = Connection | Session
"""Where statements run: a unit of work's session, or a connection."""

_INBOX: Table = InboxEntry.__table__  # type: ignore[attr-defined]  # set by SQLModel
_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
_CLAIM: Table = Claim.__table__  # type: ignore[attr-defined]


@functools.cache
def upsert_claims(*, is_sqlite: bool) -> Any:
    """Claim each input unless another owner's claim is live (the rows go as an executemany).

    Also run row by row through sqlite3 by SQLite's group commit (`outbox.sqlite3_statements`).
    """
    stmt = conflict_insert(_CLAIM, is_sqlite=is_sqlite)
    return stmt.on_conflict_do_update(
        index_elements=["consumer", "key"],
        set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
        where=_CLAIM.c.expires_at < bindparam("now"),
    ).returning(_CLAIM.c.consumer, _CLAIM.c.key, _CLAIM.c.owner)


_PROCESSED = select(_INBOX.c.consumer, _INBOX.c.key, _INBOX.c.result).where(
    tuple_(_INBOX.c.consumer, _INBOX.c.key).in_(bindparam("keys", expanding=True))
)
_END_CLAIMS = delete(_CLAIM).where(
    tuple_(_CLAIM.c.consumer, _CLAIM.c.key).in_(bindparam("keys", expanding=True))
)
_INSERT_INBOX = insert(_INBOX)
_INSERT_OUTBOX = insert(_OUTBOX).returning(_OUTBOX.c.id, sort_by_parameter_order=True)
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(sent_at=bindparam("now"), last_error=None)
)


@functools.cache
def _insert(table: Table) -> Insert:
    """The insert of ``table``, built once."""
    return insert(table)


class SqlAlchemyStatements:
    """`outbox.staged_writes.Statements` on a synchronous SQLAlchemy connection or session."""

    def __init__(self, executor: Executor, *, is_sqlite: bool) -> None:
        self._executor = executor
        self._upsert = upsert_claims(is_sqlite=is_sqlite)

    def claim(self, requests: Sequence[ClaimRequest], now: datetime) -> dict[tuple[str, str], str]:
        rows = self._executor.execute(
            self._upsert,
            [
                {
                    "consumer": r.consumer,
                    "key": r.key,
                    "owner": r.owner,
                    "expires_at": r.expires_at,
                    "now": now,
                }
                for r in requests
            ],
        )
        return {(row.consumer, row.key): row.owner for row in rows}

    def processed(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes | None]:
        rows = self._executor.execute(_PROCESSED, {"keys": list(keys)})
        return {(row.consumer, row.key): row.result for row in rows}

    def end_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        self._executor.execute(_END_CLAIMS, {"keys": list(keys)})

    def insert_inbox(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            self._executor.execute(_INSERT_INBOX, list(rows))
        except sa_exc.IntegrityError as exc:
            raise AlreadyProcessedError(rows[0]["consumer"], rows[0]["key"]) from exc

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        self._executor.execute(_insert(table), list(rows))

    def update(self, statement: Update, many: Sequence[dict[str, Any]]) -> None:
        self._executor.execute(statement, list(many))

    def mark_sent(self, row_ids: Sequence[int], now: datetime) -> None:
        self._executor.execute(_MARK_SENT, {"ids": list(row_ids), "now": now})

    def insert_outbox(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        return list(self._executor.execute(_INSERT_OUTBOX, list(rows)).scalars().all())


def write(executor: Executor, units: Sequence[StagedWrites], *, is_sqlite: bool) -> Written:
    """Write the staged rows of ``units`` in the open transaction of ``executor``
    (see `outbox.staged_writes.write_staged`)."""
    return write_staged(SqlAlchemyStatements(executor, is_sqlite=is_sqlite), units)
