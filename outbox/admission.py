"""Admission of an input: processed before (its stored result answers), or claimed, or busy.

A worker may run an input only when the inbox has no entry for it and the
worker holds its claim (`outbox.claims`). Both are decided for many inputs in
two statements (a third drops claims taken for inputs found processed), so
that the deliveries arriving together are admitted in one shared transaction
(`outbox.group_commit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from outbox.tables import Claim, InboxEntry

_INBOX: Table = InboxEntry.__table__  # type: ignore[attr-defined]  # set by SQLModel
_CLAIM: Table = Claim.__table__  # type: ignore[attr-defined]

Executor = Connection | Session
"""Where statements run: a connection (group commit) or a unit of work's session. Both
are synchronous: a shared transaction runs as one call (see `outbox.group_commit`)."""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A worker (``owner``) asks to run ``key`` at ``consumer`` until ``expires_at``."""

    consumer: str
    key: str
    owner: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a `ClaimRequest`."""

    processed: bool
    """The input was processed before: answer with ``result``, run nothing."""
    result: bytes | None
    claimed: bool
    """The worker holds the claim and may run the input."""


def _upsert(dialect_insert: Any) -> Any:
    """Claim each input unless another owner's claim is live (one statement, built once, so
    that SQLAlchemy compiles it once; the rows go as an executemany)."""
    stmt = dialect_insert(_CLAIM)
    return stmt.on_conflict_do_update(
        index_elements=["consumer", "key"],
        set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
        where=_CLAIM.c.expires_at < bindparam("now"),
    ).returning(_CLAIM.c.consumer, _CLAIM.c.key, _CLAIM.c.owner)


_UPSERT_SQLITE = _upsert(sqlite.insert)
_UPSERT_POSTGRES = _upsert(postgresql.insert)
_PROCESSED = select(_INBOX.c.consumer, _INBOX.c.key, _INBOX.c.result).where(
    tuple_(_INBOX.c.consumer, _INBOX.c.key).in_(bindparam("keys", expanding=True))
)
END_CLAIMS = delete(_CLAIM).where(
    tuple_(_CLAIM.c.consumer, _CLAIM.c.key).in_(bindparam("keys", expanding=True))
)
"""End every claim on the (consumer, key) pairs given as ``keys``. The statements here are
built once: SQLAlchemy then finds their compiled form without working out a cache key
for a new statement object at every shared transaction."""


def admit_all(
    executor: Executor, requests: Sequence[ClaimRequest], *, is_sqlite: bool, now: datetime
) -> list[Admission]:
    """Admit ``requests`` in the open transaction of ``executor`` (a connection or session).

    A live claim of another owner wins; a lapsed one is taken over. Two requests
    for the same input in one call: the first may claim it, the second is busy.

    The claims are written before the inbox is read. Under PostgreSQL's read committed,
    a worker that finishes the input between the two statements (its inbox entry in,
    its claim gone) is then seen by the read, and the input is answered from the inbox;
    read first, its commit could free the claim just before the upsert, and the input
    would run a second time. A claim taken for an input found processed is dropped.
    """
    wanted: dict[tuple[str, str], ClaimRequest] = {}
    for request in requests:
        wanted.setdefault((request.consumer, request.key), request)
    rows = executor.execute(
        _UPSERT_SQLITE if is_sqlite else _UPSERT_POSTGRES,
        [
            {
                "consumer": r.consumer,
                "key": r.key,
                "owner": r.owner,
                "expires_at": r.expires_at,
                "now": now,
            }
            for r in wanted.values()
        ],
    )
    holders = {(row.consumer, row.key): row.owner for row in rows}
    rows = executor.execute(_PROCESSED, {"keys": list(wanted)})
    done = {(row.consumer, row.key): row.result for row in rows}
    stray = [k for k in done if holders.get(k) == wanted[k].owner]
    if stray:
        executor.execute(END_CLAIMS, {"keys": stray})
    return [
        Admission(
            processed=(r.consumer, r.key) in done,
            result=done.get((r.consumer, r.key)),
            claimed=(r.consumer, r.key) not in done and holders.get((r.consumer, r.key)) == r.owner,
        )
        for r in requests
    ]
