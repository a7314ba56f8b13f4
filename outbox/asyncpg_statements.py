"""A shared write's statements on PostgreSQL through asyncpg alone (group commit's writer).

Through SQLAlchemy's async engine a one-statement transaction cost 0.50-0.65 ms on
this kind of machine against 0.28 ms through asyncpg, and an admission transaction
1.0 against 0.6 ms: most of a durable step's time on PostgreSQL went to the layers
around the driver. Here each statement is one asyncpg call. Inserts take their rows
as arrays (``unnest``), so that one statement writes any number of rows and still
returns what it wrote; the columns and types of other tables' inserts, and their
updates, come from SQLAlchemy, compiled once for asyncpg, their values converted by
the columns' own types (JSON, `outbox.columns.UtcDateTime`).

A write without claims or updates goes as one statement instead
(`outbox.asyncpg_one_statement`), built from the same pieces of SQL.

`outbox.staged_writes.write_staged` is synchronous, so these methods are too: they
run in a greenlet (``greenlet_spawn``) and wait for asyncpg with ``await_only``, as
SQLAlchemy's own async engine does.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Table, Update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.util import await_only

from outbox.admission import ClaimRequest
from outbox.compiled import Arguments, compiled_for, insert_columns_of
from outbox.errors import AlreadyProcessedError

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's

_CLAIM = """
INSERT INTO ballast_claim (consumer, key, owner, expires_at)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::timestamptz[])
ON CONFLICT (consumer, key) DO UPDATE
SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE ballast_claim.expires_at < $5
RETURNING consumer, key, owner"""
PROCESSED_SQL = """
SELECT consumer, key, result FROM ballast_inbox
WHERE (consumer, key) IN (SELECT * FROM unnest($1::varchar[], $2::varchar[]))"""


class Parameters:
    """A statement's positional parameters, numbered as they are added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any, cast: str) -> str:
        """The placeholder of ``value`` as a ``cast`` (``$3::varchar[]``)."""
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def insert_inbox_sql(p: Parameters, rows: Sequence[dict[str, Any]]) -> str:
    columns = ", ".join(
        p.add([r[name] for r in rows], cast)
        for name, cast in (
            ("consumer", "varchar[]"),
            ("key", "varchar[]"),
            ("processed_at", "timestamptz[]"),
            ("result", "bytea[]"),
        )
    )
    return (
        "INSERT INTO ballast_inbox (consumer, key, processed_at, result)\n"
        f"SELECT * FROM unnest({columns})"
    )


def end_claims_sql(p: Parameters, keys: Sequence[tuple[str, str]]) -> str:
    consumers, names = (p.add(column, "varchar[]") for column in _columns(keys))
    return (
        "DELETE FROM ballast_claim\n"
        f"WHERE (consumer, key) IN (SELECT * FROM unnest({consumers}, {names}))"
    )


def insert_sql(p: Parameters, table: Table, rows: Sequence[dict[str, Any]]) -> str:
    """The insert of ``rows`` (all with the same columns) into ``table``, as arrays, each
    value converted as its column's type converts it for asyncpg."""
    names, casts, arguments = _array_columns(table, tuple(rows[0]))
    columns = zip(*(arguments(row) for row in rows), strict=True)
    arrays = ", ".join(p.add(list(v), cast) for v, cast in zip(columns, casts, strict=True))
    return f"INSERT INTO {table.name} ({', '.join(names)})\nSELECT * FROM unnest({arrays})"


@functools.cache
def _array_columns(table: Table, given: tuple[str, ...]) -> tuple[list[str], list[str], Arguments]:
    """The columns an insert of the ``given`` ones writes, the array type of each, and their
    `Arguments`: worked out once per table and columns."""
    names, arguments = insert_columns_of(table, given, _DIALECT)
    return names, [f"{table.c[name].type.compile(dialect=_DIALECT)}[]" for name in names], arguments


def mark_sent_sql(p: Parameters, row_ids: Sequence[int], now: datetime) -> str:
    at, ids = p.add(now, "timestamptz"), p.add(list(row_ids), "bigint[]")
    return f"UPDATE ballast_outbox SET sent_at = {at}, last_error = NULL WHERE id = ANY({ids})"


def insert_outbox_sql(p: Parameters, rows: Sequence[dict[str, Any]]) -> str:
    """The insert of outbox rows, returning (id, message_id) of each; see `outbox_ids`."""
    columns = ", ".join(
        p.add(values, cast)
        for values, cast in (
            ([r["message_id"] for r in rows], "varchar[]"),
            ([r["subject"] for r in rows], "varchar[]"),
            ([r["payload"] for r in rows], "bytea[]"),
            ([json.dumps(r["headers"]) for r in rows], "text[]"),
            ([r["created_at"] for r in rows], "timestamptz[]"),
            ([r["attempts"] for r in rows], "integer[]"),
            ([r["producer"] for r in rows], "varchar[]"),
        )
    )
    return (
        "INSERT INTO ballast_outbox"
        " (message_id, subject, payload, headers, created_at, attempts, producer)\n"
        "SELECT m, s, p, h::json, c, a, pr\n"
        f"FROM unnest({columns}) WITH ORDINALITY AS u(m, s, p, h, c, a, pr, n)\n"
        "ORDER BY n\n"
        "RETURNING id, message_id"
    )


def outbox_ids(returned: Sequence[asyncpg.Record], rows: Sequence[dict[str, Any]]) -> list[int]:
    """The ids of the outbox rows written, in the order of ``rows``.

    The ids come from the table's sequence in the order the rows are inserted (ORDER BY),
    so sorted they match the rows; each row's message id is checked against it all the
    same, since the relay marks rows sent by these ids.
    """
    written = sorted((row["id"], row["message_id"]) for row in returned)
    if [message_id for _, message_id in written] != [r["message_id"] for r in rows]:
        raise RuntimeError("outbox rows were not numbered in the order they were written")
    return [row_id for row_id, _ in written]


class AsyncpgStatements:
    """`outbox.staged_writes.Statements` on an asyncpg connection, in the transaction open on
    it; admission alone runs with none (each statement commits on its own)."""

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
        rows = await_only(self._conn.fetch(PROCESSED_SQL, consumers, names))
        return {(row["consumer"], row["key"]): row["result"] for row in rows}

    def end_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        p = Parameters()
        await_only(self._conn.execute(end_claims_sql(p, keys), *p.values))

    def insert_inbox(self, rows: Sequence[dict[str, Any]]) -> None:
        p = Parameters()
        try:
            await_only(self._conn.execute(insert_inbox_sql(p, rows), *p.values))
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyProcessedError(rows[0]["consumer"], rows[0]["key"]) from exc

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        p = Parameters()
        await_only(self._conn.execute(insert_sql(p, table, rows), *p.values))

    def update(self, statement: Update, many: Sequence[dict[str, Any]]) -> None:
        sql, arguments = compiled_for(statement, _DIALECT)
        await_only(self._conn.executemany(sql, [arguments(params) for params in many]))

    def mark_sent(self, row_ids: Sequence[int], now: datetime) -> None:
        p = Parameters()
        await_only(self._conn.execute(mark_sent_sql(p, row_ids, now), *p.values))

    def insert_outbox(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        p = Parameters()
        return outbox_ids(await_only(self._conn.fetch(insert_outbox_sql(p, rows), *p.values)), rows)


def _columns(keys: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [consumer for consumer, _ in keys], [key for _, key in keys]
