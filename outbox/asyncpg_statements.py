"""A shared write's statements on PostgreSQL through asyncpg alone (group commit's writer).

Through SQLAlchemy's async engine a one-statement transaction cost 0.50-0.65 ms on
this kind of machine against 0.28 ms through asyncpg, and an admission transaction
1.0 against 0.6 ms: most of a durable step's time on PostgreSQL went to the layers
around the driver. Here each statement is one asyncpg call. The fixed statements
(claims, inbox, outbox) take their rows as arrays (``unnest``), so that one
statement writes any number of rows and still returns what it wrote; inserts and
updates of other tables are SQLAlchemy statements compiled once for asyncpg, their
values converted by the columns' own types (JSON, `outbox.columns.UtcDateTime`).

`outbox.staged_writes.write_staged` is synchronous, so these methods are too: they
run in a greenlet (``greenlet_spawn``) and wait for asyncpg with ``await_only``, as
SQLAlchemy's own async engine does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Table, Update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.util import await_only

from outbox.admission import ClaimRequest
from outbox.compiled import compiled_for, insert_of
from outbox.errors import AlreadyProcessedError

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's

_CLAIM = """
INSERT INTO ballast_claim (consumer, key, owner, expires_at)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::timestamptz[])
ON CONFLICT (consumer, key) DO UPDATE
SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE ballast_claim.expires_at < $5
RETURNING consumer, key, owner"""
_PROCESSED = """
SELECT consumer, key, result FROM ballast_inbox
WHERE (consumer, key) IN (SELECT * FROM unnest($1::varchar[], $2::varchar[]))"""
_END_CLAIMS = """
DELETE FROM ballast_claim
WHERE (consumer, key) IN (SELECT * FROM unnest($1::varchar[], $2::varchar[]))"""
_INSERT_INBOX = """
INSERT INTO ballast_inbox (consumer, key, processed_at, result)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::timestamptz[], $4::bytea[])"""
_MARK_SENT = (
    "UPDATE ballast_outbox SET sent_at = $1, last_error = NULL WHERE id = ANY($2::bigint[])"
)
_INSERT_OUTBOX = """
INSERT INTO ballast_outbox (message_id, subject, payload, headers, created_at, attempts, producer)
SELECT m, s, p, h::json, c, a, pr
FROM unnest($1::varchar[], $2::varchar[], $3::bytea[], $4::text[], $5::timestamptz[],
            $6::integer[], $7::varchar[]) WITH ORDINALITY AS u(m, s, p, h, c, a, pr, n)
ORDER BY n
RETURNING id, message_id"""
"""The ids come from the table's sequence in the order the rows are inserted (ORDER BY),
so sorted they match the rows; each row's message id is checked against it all the same,
since the relay marks rows sent by these ids."""


class AsyncpgStatements:
    """`outbox.staged_writes.Statements` on an asyncpg connection with a transaction open."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._conn = connection

    def claim(self, requests: Sequence[ClaimRequest], now: datetime) -> dict[tuple[str, str], str]:
        rows = await_only(
            self._conn.fetch(
                _CLAIM,
                [r.consumer for r in requests],
                [r.key for r in requests],
                [r.owner for r in requests],
                [r.expires_at for r in requests],
                now,
            )
        )
        return {(row["consumer"], row["key"]): row["owner"] for row in rows}

    def processed(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes | None]:
        consumers, names = _columns(keys)
        rows = await_only(self._conn.fetch(_PROCESSED, consumers, names))
        return {(row["consumer"], row["key"]): row["result"] for row in rows}

    def end_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        await_only(self._conn.execute(_END_CLAIMS, *_columns(keys)))

    def insert_inbox(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            await_only(
                self._conn.execute(
                    _INSERT_INBOX,
                    [r["consumer"] for r in rows],
                    [r["key"] for r in rows],
                    [r["processed_at"] for r in rows],
                    [r["result"] for r in rows],
                )
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyProcessedError(rows[0]["consumer"], rows[0]["key"]) from exc

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        sql, arguments = insert_of(table, tuple(rows[0]), _DIALECT)
        await_only(self._conn.executemany(sql, [arguments(row) for row in rows]))

    def update(self, statement: Update, many: Sequence[dict[str, Any]]) -> None:
        sql, arguments = compiled_for(statement, _DIALECT)
        await_only(self._conn.executemany(sql, [arguments(params) for params in many]))

    def mark_sent(self, row_ids: Sequence[int], now: datetime) -> None:
        await_only(self._conn.execute(_MARK_SENT, now, list(row_ids)))

    def insert_outbox(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        returned = await_only(
            self._conn.fetch(
                _INSERT_OUTBOX,
                [r["message_id"] for r in rows],
                [r["subject"] for r in rows],
                [r["payload"] for r in rows],
                [json.dumps(r["headers"]) for r in rows],
                [r["created_at"] for r in rows],
                [r["attempts"] for r in rows],
                [r["producer"] for r in rows],
            )
        )
        written = sorted((row["id"], row["message_id"]) for row in returned)
        if [message_id for _, message_id in written] != [r["message_id"] for r in rows]:
            raise RuntimeError("outbox rows were not numbered in the order they were written")
        return [row_id for row_id, _ in written]


def _columns(keys: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [consumer for consumer, _ in keys], [key for _, key in keys]
