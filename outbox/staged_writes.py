"""What a unit of work writes when it commits, and how it is written: for one unit or many.

A unit stages its rows in memory (inbox entries, outbox messages, journal and
audit rows, claims it ends) and writes them only at commit. Staged rows of many
units can then go out together, one multi-row statement per table, in one
transaction (`outbox.group_commit`): on this kind of machine each statement's
round trip through the async driver costs far more than the database's own work.
What is written is decided here; how the statements run is a `Statements`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, Update
from sqlmodel import SQLModel

from contracts.wire import utc_now
from outbox.admission import Admission, ClaimRequest, ClaimStatements, admit_all
from outbox.publisher import Outgoing


@dataclass(frozen=True, slots=True)
class Committed:
    """An outbox row that has committed: what the relay of this process publishes next."""

    row_id: int
    message: Outgoing


@dataclass(frozen=True, slots=True)
class Written:
    """What writing staged rows decided: the outbox rows committed, the admissions."""

    committed: list[Committed]
    admissions: list[Admission]


@dataclass(slots=True)
class StagedWrites:
    """The rows one unit of work writes at commit."""

    inbox: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)
    """Other inserts (journal, audit), in the order they were staged."""
    ended_claims: list[tuple[str, str]] = field(default_factory=list)
    """(consumer, key) claims to end; processed inputs end theirs too."""
    sent: list[int] = field(default_factory=list)
    """Outbox rows the relay has published, to mark sent."""
    updates: list[tuple[Update, dict[str, Any]]] = field(default_factory=list)
    """Updates by a statement with bound parameters; units sharing a statement share one
    multi-row execution. They run after the inserts."""
    claims: list[ClaimRequest] = field(default_factory=list)
    """Inputs to admit (`outbox.admission`); decided before anything else is written."""
    deferred: bool = False
    """Handed to `GroupCommit.defer`: nobody waits for these writes, a crash may lose them."""

    def insert(self, model: type[SQLModel], values: dict[str, Any]) -> None:
        """Stage the insert of a row given as column values (no model instance is built)."""
        self.rows.append((model.__table__, values))  # type: ignore[attr-defined]

    @property
    def awaited(self) -> bool:
        """Whether something acts on these rows once they commit (messages the relay
        publishes, inbox entries and claims that decide a delivery): then the commit is
        waited for, never deferred."""
        return bool(self.outbox or self.inbox or self.claims)

    @property
    def must_reach_disk(self) -> bool:
        """Whether the commit must be on disk before it counts (a synced commit).

        Not for claims alone: a claim is a lease among live workers, which a crash of
        the process or of the database ends anyway (its delivery then runs again, as it
        would once a surviving claim lapsed). Not for deferred writes: a crash may lose
        them by design. Both databases write their log in order, so the next synced
        commit takes these to disk with it; a crash loses at most the latest of them.
        """
        return not self.deferred and self._writes_rows

    @property
    def admission_only(self) -> bool:
        """Whether these writes are inputs to admit and nothing else."""
        return bool(self.claims) and not self._writes_rows

    @property
    def deferred_single_update(self) -> bool:
        """Whether these are deferred writes of one update and nothing else (the outcome of a
        step, say): written on their own, they stay all or nothing."""
        return self.deferred and len(self.updates) == 1 and not (self.claims or self._others)

    @property
    def empty(self) -> bool:
        return not (self.claims or self._writes_rows)

    @property
    def _writes_rows(self) -> bool:
        return bool(self.updates or self._others)

    @property
    def _others(self) -> bool:
        """Whether rows are written other than by updates (inserts, ended claims, sent marks)."""
        return bool(self.inbox or self.outbox or self.rows or self.ended_claims or self.sent)


class Statements(ClaimStatements, Protocol):
    """The statements a shared write runs, in its open transaction: through SQLAlchemy
    (`outbox.sqlalchemy_statements`, a unit of work's own session) or, for group commit,
    sqlite3 or asyncpg alone (`outbox.sqlite3_statements`, `outbox.asyncpg_statements`).
    Rows are given as column values."""

    def insert_inbox(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert inbox entries; raise `AlreadyProcessedError` (naming the first row's input)
        if one exists already."""

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows of ``table``, all with the same columns."""

    def update(self, statement: Update, many: Sequence[dict[str, Any]]) -> None:
        """Run ``statement`` once per parameter set."""

    def mark_sent(self, row_ids: Sequence[int], now: datetime) -> None:
        """Mark these outbox rows sent at ``now``."""

    def insert_outbox(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert outbox rows; return their ids, in the order of ``rows``."""


@dataclass(slots=True)
class WritePlan:
    """The rows of many units, gathered per statement (`plan_writes`)."""

    inbox: list[dict[str, Any]]
    ended_claims: list[tuple[str, str]]
    """Claims to end: those of the processed inputs, then those ended explicitly."""
    rows: dict[Table, list[dict[str, Any]]]
    updates: list[tuple[Update, list[dict[str, Any]]]]
    sent: list[int]
    outbox: list[dict[str, Any]]


def plan_writes(units: Sequence[StagedWrites]) -> WritePlan:
    """What ``units`` write besides their claims, one entry per statement to run."""
    inbox = [entry for unit in units for entry in unit.inbox]
    ended = [(e["consumer"], e["key"]) for e in inbox]
    ended += [claim for unit in units for claim in unit.ended_claims]
    by_table: dict[Table, list[dict[str, Any]]] = {}
    for unit in units:
        for table, values in unit.rows:
            by_table.setdefault(table, []).append(values)
    by_statement: dict[int, tuple[Update, list[dict[str, Any]]]] = {}
    for unit in units:
        for statement, params in unit.updates:
            by_statement.setdefault(id(statement), (statement, []))[1].append(params)
    return WritePlan(
        inbox=inbox,
        ended_claims=ended,
        rows=by_table,
        updates=list(by_statement.values()),
        sent=[row_id for unit in units for row_id in unit.sent],
        outbox=[row for unit in units for row in unit.outbox],
    )


def committed_rows(row_ids: Sequence[int], messages: Sequence[dict[str, Any]]) -> list[Committed]:
    """The outbox rows ``messages`` as written, with their ids (in the same order)."""
    return [
        Committed(
            row_id,
            Outgoing(
                message_id=row["message_id"],
                subject=row["subject"],
                payload=row["payload"],
                headers=row["headers"],
            ),
        )
        for row_id, row in zip(row_ids, messages, strict=True)
    ]


def write_staged(statements: Statements, units: Sequence[StagedWrites]) -> Written:
    """Write the staged rows of ``units`` in the open transaction of ``statements``.

    Returns the outbox rows written, with their ids, and the admissions, both in
    staging order. Raises `AlreadyProcessedError` if an inbox entry exists
    already (another delivery of the same input committed first); the caller
    rolls back.
    """
    now = utc_now()
    requests = [request for unit in units for request in unit.claims]
    admissions = admit_all(statements, requests, now) if requests else []
    plan = plan_writes(units)
    if plan.inbox:
        statements.insert_inbox(plan.inbox)
    if plan.ended_claims:
        statements.end_claims(plan.ended_claims)
    for table, rows in plan.rows.items():
        statements.insert(table, rows)
    for statement, many in plan.updates:
        statements.update(statement, many)
    if plan.sent:
        statements.mark_sent(plan.sent, now)
    if not plan.outbox:
        return Written([], admissions)
    return Written(committed_rows(statements.insert_outbox(plan.outbox), plan.outbox), admissions)
