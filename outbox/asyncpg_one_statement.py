"""A shared write as one statement on PostgreSQL, when it can be one.

Every statement of a transaction is a round trip, and so are BEGIN and COMMIT: a
transaction of four inserts cost 2.1 ms on this kind of machine, one insert on its own
(its own transaction) 0.65 ms. The writes of a step's result (inbox entry, ended claim,
audit row, outgoing messages) need no answer from the database to decide what comes
next, so they go as one statement: each table's rows are a data-modifying ``WITH``
part that takes them as arrays (``unnest``), and the outbox insert returns the new
rows' ids. A single statement is atomic on its own, and PostgreSQL runs every part of
it to completion.

Admission cannot go this way: it reads the inbox after writing its claims, in a
statement of its own, to see a worker that finished in between (`outbox.admission`);
updates are given as statements with parameters, not rows, and would not see a row
inserted by the same statement. A write with either runs as a transaction of statements
(`outbox.asyncpg_statements`), except for the deferred outcome of a step that rides
along with an agent's next request (`GroupCommit.defer`): that update goes on its own,
on the writer's other connection, while the one statement runs (`outbox.asyncpg_writer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts.wire import utc_now
from outbox.asyncpg_statements import (
    Parameters,
    end_claims_sql,
    insert_inbox_sql,
    insert_outbox_sql,
    insert_sql,
    mark_sent_sql,
    outbox_ids,
)
from outbox.staged_writes import StagedWrites, Written, committed_rows, plan_writes

_NOTHING_RETURNED = "SELECT NULL::bigint AS id, NULL::varchar AS message_id WHERE false"


def fits_one_statement(units: Sequence[StagedWrites]) -> bool:
    """Whether these units can be written as one statement: no claims, no updates."""
    return not any(unit.claims or unit.updates for unit in units)


async def write_in_one_statement(
    connection: asyncpg.Connection, units: Sequence[StagedWrites]
) -> Written:
    """Write ``units`` (see `fits_one_statement`) in one statement, its own transaction.

    Errors are asyncpg's. Nothing is written if one is raised: for a row that clashes
    (`asyncpg.IntegrityConstraintViolationError`), the transaction of statements tells
    which (an inbox entry first: `AlreadyProcessedError`).
    """
    plan = plan_writes(units)
    p = Parameters()
    parts = []
    if plan.inbox:
        parts.append(insert_inbox_sql(p, plan.inbox))
    if plan.ended_claims:
        parts.append(end_claims_sql(p, plan.ended_claims))
    parts += [insert_sql(p, table, rows) for table, rows in plan.rows.items()]
    if plan.sent:
        parts.append(mark_sent_sql(p, plan.sent, utc_now()))
    main = insert_outbox_sql(p, plan.outbox) if plan.outbox else _NOTHING_RETURNED
    with_parts = ",\n".join(f"w{n} AS ({sql})" for n, sql in enumerate(parts))
    statement = f"WITH {with_parts}\n{main}" if parts else main
    returned = await connection.fetch(statement, *p.values)
    if not plan.outbox:
        return Written([], [])
    return Written(committed_rows(outbox_ids(returned, plan.outbox), plan.outbox), [])
