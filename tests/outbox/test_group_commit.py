"""Group commit: concurrent units of work share transactions, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.util import greenlet_spawn
from sqlmodel import col
from structlog.testing import capture_logs

from contracts.wire import utc_now
from outbox import (
    AlreadyProcessedError,
    Database,
    DatabaseError,
    InboxEntry,
    OutboxMessage,
    UnitOfWork,
    sqlite_url,
)
from outbox.admission import Admission, ClaimRequest, admit_all
from outbox.asyncpg_one_statement import fits_one_statement, write_in_one_statement
from outbox.asyncpg_statements import PROCESSED_SQL, AsyncpgStatements, Parameters, end_claims_sql
from outbox.asyncpg_writer import AsyncpgWriter, asyncpg_dsn, writer_connection
from outbox.claims import admit
from outbox.database import configure_sqlite_connection
from outbox.journal import StepStatus, finish_step, load_journal, record_step
from outbox.schema import migrate, upgrade
from outbox.sqlalchemy_statements import SqlAlchemyStatements
from outbox.sqlite3_statements import Sqlite3Statements
from outbox.sqlite_writer import WRITER_THREAD, SqliteWriter
from outbox.staged_writes import StagedWrites, Statements, write_staged
from outbox.tables import AuditRecord, Claim, JournalEntry
from tests.conftest import POSTGRES_URL, fresh_postgres_database
from tests.helpers import eventually
from tests.outbox.conftest import Widget, widget_count

UNITS = 60
_ID = col(OutboxMessage.id)


async def _count(db: Database, model: type[InboxEntry] | type[OutboxMessage]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _unit(db: Database, n: int) -> None:
    async with UnitOfWork(db) as uow:
        uow.mark_processed("consumer", f"key-{n}", f"result-{n}".encode())
        uow.publish("out.subject", f"payload-{n}".encode(), message_id=f"msg-{n}")


class TestSharedTransactions:
    async def test_concurrent_units_commit_together_and_all_rows_are_kept(
        self, db: Database
    ) -> None:
        """Sixty units committing at once take fewer transactions than units, and lose nothing."""
        handed_over: list[tuple[int, str]] = []
        db.on_commit(
            lambda rows: handed_over.extend((r.row_id, r.message.message_id) for r in rows)
        )
        await asyncio.gather(*(_unit(db, n) for n in range(UNITS)))
        assert db.group.units == UNITS
        assert db.group.transactions < UNITS
        assert await _count(db, InboxEntry) == UNITS
        assert await _count(db, OutboxMessage) == UNITS
        # The relay is handed every committed row once, with the id the database gave it
        # (it marks rows sent by these ids).
        async with db.session() as session:
            query = select(col(OutboxMessage.id), col(OutboxMessage.message_id))
            stored = (await session.execute(query)).all()
        assert sorted(handed_over) == sorted((row_id, message_id) for row_id, message_id in stored)
        assert sorted(m for _, m in handed_over) == sorted(f"msg-{n}" for n in range(UNITS))

    async def test_a_repeated_input_fails_its_own_unit_only(self, db: Database) -> None:
        """One unit of a shared transaction marks an input processed twice: it alone fails."""
        await _unit(db, 7)
        outcomes = await asyncio.gather(
            *(_unit(db, n) for n in range(UNITS)), return_exceptions=True
        )
        failed = [n for n, outcome in enumerate(outcomes) if outcome is not None]
        assert failed == [7]
        assert isinstance(outcomes[7], AlreadyProcessedError)
        assert await _count(db, InboxEntry) == UNITS
        assert await _count(db, OutboxMessage) == UNITS

    async def test_a_clashing_row_fails_its_own_unit_only(self, db: Database) -> None:
        """A journal step recorded twice (two deliveries of one run) fails that unit alone."""

        async def step(seq: int) -> None:
            async with UnitOfWork(db) as uow:
                record_step(
                    uow, task_id="t", seq=seq, kind="step", name="s", request=None,
                    status=StepStatus.COMPLETED,
                )  # fmt: skip

        await step(3)
        outcomes = await asyncio.gather(*(step(n) for n in range(10)), return_exceptions=True)
        assert [n for n, outcome in enumerate(outcomes) if outcome is not None] == [3]
        assert isinstance(outcomes[3], IntegrityError)
        assert db.group.units == 10, "the nine others and the first write of step 3"

    async def test_a_unit_with_its_own_statements_commits_on_its_own(self, db: Database) -> None:
        """Business rows written through the session commit with the unit's staged rows."""
        async with UnitOfWork(db) as uow:
            uow.session.add(Widget(name="effect"))
            uow.mark_processed("consumer", "own", None)
        assert db.group.units == 0
        assert await widget_count(db) == 1
        assert await _count(db, InboxEntry) == 1

    async def test_shared_and_own_transactions_at_once_all_commit(self, db: Database) -> None:
        """Group commit and units with their own statements write at the same time (on SQLite
        through two connections that take turns): every row of both kinds is kept."""

        async def own(n: int) -> None:
            async with UnitOfWork(db) as uow:
                uow.session.add(Widget(name=f"w{n}"))
                uow.mark_processed("own", f"key-{n}", None)

        await asyncio.gather(*(_unit(db, n) for n in range(UNITS)), *(own(n) for n in range(10)))
        assert await _count(db, InboxEntry) == UNITS + 10
        assert await _count(db, OutboxMessage) == UNITS
        assert await widget_count(db) == 10

    async def test_closing_the_database_ends_its_sqlite_writer(self, tmp_path: Path) -> None:
        """The thread that writes shared transactions on SQLite does not outlive the database."""
        url = sqlite_url(tmp_path / "writer.db")
        await migrate(url)
        db = Database(url)
        await _unit(db, 1)
        assert [t for t in threading.enumerate() if t.name.startswith("ballast-sqlite")]
        await db.dispose()
        assert not [t for t in threading.enumerate() if t.name.startswith("ballast-sqlite")]

    async def test_a_lone_unit_waits_for_a_held_write_lock_without_stopping_the_loop(
        self, tmp_path: Path
    ) -> None:
        """On SQLite a lone unit is written on the loop's thread, but only if the write lock
        is free: one held by another connection is waited for off the loop, which goes on."""
        path = tmp_path / "locked.db"
        await migrate(sqlite_url(path))
        db = Database(sqlite_url(path))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            await _unit(db, 1)
            other.execute("BEGIN IMMEDIATE")
            committing = asyncio.create_task(_unit(db, 2))
            for _ in range(20):  # a loop stopped by the wait would only get here afterwards
                await asyncio.sleep(0.01)
            assert not committing.done(), "the unit waits for the lock, off the loop"
            other.execute("ROLLBACK")
            await committing
            assert await _count(db, InboxEntry) == 2
        finally:
            other.close()
            await db.dispose()

    async def test_a_failed_write_leaves_nothing_for_the_loop_to_wait_for(
        self, tmp_path: Path
    ) -> None:
        """A shared transaction that failed (an input processed twice) must not leave a
        statement to its error. The error lives on with whoever waited for the unit, and
        whichever thread frees it must first take the writer connection's lock, which
        the writer's thread holds while it waits for SQLite's write lock. Freed on the
        loop's thread meanwhile, the loop would stop until the busy timeout failed that
        wait: so the write here, which only waits for a lock held elsewhere, would fail."""
        path = tmp_path / "failed.db"
        await migrate(sqlite_url(path))
        writer = SqliteWriter(str(path), busy_timeout_s=2, configure=configure_sqlite_connection)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            await writer([_processing("twice")])
            with pytest.raises(AlreadyProcessedError) as failed:
                await writer([_processing("twice")])
            other.execute("BEGIN IMMEDIATE")
            waiting = asyncio.create_task(writer([_processing("a"), _processing("b")]))
            await eventually(_writer_waits_for_lock, timeout_s=5, what="the writer to wait")
            del failed
            gc.collect()  # frees the error on this thread, the loop's
            other.execute("ROLLBACK")
            await waiting
        finally:
            other.close()
            await writer.dispose()
        assert _inbox_keys(path) == {"twice", "a", "b"}

    async def test_a_unit_whose_committer_is_cancelled_is_committed_all_the_same(
        self, tmp_path: Path
    ) -> None:
        """The writer finishes a transaction whatever becomes of those who wait for it:
        other units depend on it. A committer cancelled while its transaction waits for
        the write lock gets the cancellation; its unit is committed, and so are the units
        queued behind it."""
        path = tmp_path / "cancelled.db"
        await migrate(sqlite_url(path))
        db = Database(sqlite_url(path))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            cancelled = asyncio.create_task(db.group.commit(_processing("a")))
            await eventually(_writer_waits_for_lock, timeout_s=5, what="the writer to wait")
            queued = asyncio.create_task(db.group.commit(_processing("b")))
            cancelled.cancel()
            other.execute("ROLLBACK")
            await queued
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        finally:
            other.close()
            await db.dispose()
        assert _inbox_keys(path) == {"a", "b"}

    async def test_every_transaction_is_written_on_the_loops_thread_while_the_lock_is_free(
        self, tmp_path: Path
    ) -> None:
        """With SQLite's write lock free, a transaction is written at once on the loop's
        thread, whatever it carries: one awaited unit with deferred writes riding along
        (an agent's next request and its previous outcome), several awaited units (load),
        deferred writes alone (the relay's marks). Only a held lock sends it to the
        writer's thread (the tests above)."""
        path = tmp_path / "threads.db"
        await migrate(sqlite_url(path))
        committed_on: list[str] = []

        def note_commit(sql: str) -> None:
            if sql == "COMMIT":
                committed_on.append(threading.current_thread().name)

        def configure(connection: sqlite3.Connection) -> None:
            configure_sqlite_connection(connection)
            connection.set_trace_callback(note_commit)

        writer = SqliteWriter(str(path), busy_timeout_s=5, configure=configure)
        try:
            await writer([_ending("a"), _ending("b", deferred=True)])
            await writer([_ending("c"), _ending("d")])
            await writer([_ending("e", deferred=True)])
        finally:
            await writer.dispose()
        assert committed_on == [threading.current_thread().name] * 3

    async def test_only_what_must_survive_a_crash_syncs_the_file(self, tmp_path: Path) -> None:
        """Claims alone and deferred writes alone commit without the file sync
        (synchronous=NORMAL); a transaction with a row that must survive a crash syncs
        (FULL), taking the earlier ones to disk with it. Every row is written either way."""
        path = tmp_path / "sync.db"
        await migrate(sqlite_url(path))
        level = ["FULL"]  # as configure_sqlite_connection sets it
        committed_with: list[str] = []

        def note(sql: str) -> None:
            if sql.startswith("PRAGMA synchronous="):
                level[0] = sql.removeprefix("PRAGMA synchronous=")
            elif sql == "COMMIT":
                committed_with.append(level[0])

        def configure(connection: sqlite3.Connection) -> None:
            configure_sqlite_connection(connection)
            connection.set_trace_callback(note)

        writer = SqliteWriter(str(path), busy_timeout_s=5, configure=configure)
        try:
            await writer([_claiming("a")])
            await writer([_processing("a")])
            await writer([_ending("b", deferred=True), _claiming("c")])
            await writer([_claiming("d"), _processing("e")])
            await writer([_processing("f")])
        finally:
            await writer.dispose()
        assert committed_with == ["NORMAL", "FULL", "NORMAL", "FULL", "FULL"]
        assert (_inbox_keys(path), _keys(path, "ballast_claim")) == ({"a", "e", "f"}, {"c", "d"})


def _inbox_keys(path: Path) -> set[str]:
    return _keys(path, "ballast_inbox")


def _keys(path: Path, table: str) -> set[str]:
    """The keys of ``table`` in the SQLite file at ``path``, read on a connection of its own."""
    with contextlib.closing(sqlite3.connect(path)) as check:
        return {row[0] for row in check.execute(f"SELECT key FROM {table}")}


def _claiming(key: str) -> StagedWrites:
    expires_at = utc_now() + timedelta(seconds=30)
    return StagedWrites(claims=[ClaimRequest("consumer", key, f"owner-{key}", expires_at)])


def _ending(key: str, *, deferred: bool = False) -> StagedWrites:
    return StagedWrites(ended_claims=[("consumer", key)], deferred=deferred)


def _processing(key: str) -> StagedWrites:
    return StagedWrites(
        inbox=[{"consumer": "consumer", "key": key, "processed_at": utc_now(), "result": None}]
    )


async def _writer_waits_for_lock() -> bool:
    """Whether the SQLite writer's thread is in BEGIN IMMEDIATE (waiting for the lock)."""
    threads = {t.ident: t.name for t in threading.enumerate()}
    return any(
        threads.get(ident, "").startswith(WRITER_THREAD)
        and frame.f_code.co_name == "_begin_and_write"
        for ident, frame in sys._current_frames().items()
    )


class TestDeferredWrites:
    async def test_they_ride_along_with_the_next_commit_or_go_alone_later(
        self, db: Database
    ) -> None:
        """Marking rows sent waits for a commit somebody waits for, or for its own turn."""
        await _unit(db, 1)
        await _unit(db, 2)
        first, second = await _outbox_ids(db)
        db.group.defer(StagedWrites(sent=[first]))
        await _unit(db, 3)
        assert db.group.transactions == 3, "the mark rode along with the third unit"
        assert await _unsent(db) == {second, first + 2}
        db.group.defer(StagedWrites(sent=[second]))
        await eventually(lambda: _is_unsent(db, second, False), timeout_s=5, what="the mark, alone")
        assert db.group.transactions == 4

    async def test_unordered_ones_wait_for_their_time_and_go_together(self, db: Database) -> None:
        """Rows to mark sent stay out of the transactions others wait for; after the wait
        they go together, in one transaction."""
        await _unit(db, 1)
        await _unit(db, 2)
        first, second = await _outbox_ids(db)
        db.group.defer(StagedWrites(sent=[first]), ordered=False)
        await _unit(db, 3)
        db.group.defer(StagedWrites(sent=[second]), ordered=False)
        assert db.group.transactions == 3
        assert {first, second} <= await _unsent(db), "the marks did not ride along"
        await eventually(lambda: _is_unsent(db, second, False), timeout_s=5, what="the marks")
        assert await _unsent(db) == {first + 2}
        assert db.group.transactions == 4, "both marks in one transaction"

    async def test_a_unit_that_does_not_wait_commits_ahead_of_the_next(self, db: Database) -> None:
        """A step's outcome is written with the next unit; a unit with a message still waits."""
        async with UnitOfWork(db) as uow:
            record_step(
                uow, task_id="t", seq=1, kind="tool", name="s", request=None,
                status=StepStatus.PENDING,
            )  # fmt: skip
        async with UnitOfWork(db, wait=False) as uow:
            finish_step(uow, task_id="t", seq=1, status=StepStatus.COMPLETED, outcome={"v": 1})
        assert db.group.transactions == 1, "nobody waited for the outcome"
        assert (await load_journal(db, "t"))[1].status == StepStatus.PENDING.value
        async with UnitOfWork(db, wait=False) as uow:  # the next step asks, as an agent does
            record_step(
                uow, task_id="t", seq=2, kind="tool", name="s", request=None,
                status=StepStatus.PENDING,
            )  # fmt: skip
            uow.publish("out.subject", b"payload", message_id="msg")
        assert db.group.transactions == 2, "a unit with a message waits for its commit"
        journal = await load_journal(db, "t")
        assert (journal[1].status, journal[1].outcome) == (StepStatus.COMPLETED.value, {"v": 1})
        assert journal[2].status == StepStatus.PENDING.value
        assert await _count(db, OutboxMessage) == 1


async def _outbox_ids(db: Database) -> list[int]:
    async with db.session() as session:
        rows = await session.scalars(select(_ID).order_by(_ID))
        return [row for row in rows if row is not None]


async def _unsent(db: Database) -> set[int]:
    async with db.session() as session:
        rows = await session.scalars(select(_ID).where(col(OutboxMessage.sent_at).is_(None)))
        return {row for row in rows if row is not None}


async def _is_unsent(db: Database, row_id: int, expected: bool) -> bool:
    return (row_id in await _unsent(db)) is expected


class TestAdmission:
    async def test_one_worker_of_many_claims_an_input(self, db: Database) -> None:
        """Workers asking for the same input at once: exactly one may run it."""
        lease = timedelta(seconds=30)
        admissions = await asyncio.gather(
            *(admit(db, "consumer", "same", f"worker-{i}", lease) for i in range(10))
        )
        assert sum(a.claimed for a in admissions) == 1
        assert not any(a.processed for a in admissions)

    async def test_a_processed_input_is_answered_with_its_result(self, db: Database) -> None:
        await _unit(db, 1)
        admission = await admit(db, "consumer", "key-1", "late", timedelta(seconds=30))
        assert admission.processed
        assert admission.result == b"result-1"
        assert not admission.claimed

    async def test_a_lapsed_claim_is_taken_over(self, db: Database) -> None:
        """A claim whose worker went quiet past its lease no longer blocks the input."""
        first = await admit(db, "consumer", "k", "crashed", timedelta(seconds=-1))
        second = await admit(db, "consumer", "k", "next", timedelta(seconds=30))
        third = await admit(db, "consumer", "k", "another", timedelta(seconds=30))
        assert (first.claimed, second.claimed, third.claimed) == (True, True, False)

    async def test_a_worker_that_finishes_during_admission_is_seen(self, db: Database) -> None:
        """The worker holding the claim commits its result (inbox entry in, claim gone)
        between two statements of another worker's admission, as a concurrent transaction
        can under read committed: the input is answered from the inbox, never run again.
        Through SQLAlchemy (sessions; SQLite's group commit)."""

        async def admit_while_first_finishes(request: ClaimRequest) -> Admission:
            def run(conn: Connection) -> list[Admission]:
                statements = SqlAlchemyStatements(conn, is_sqlite=db.is_sqlite)
                return admit_all(_FirstWorkerFinishes(statements), [request], utc_now())

            async with db.engine.begin() as conn:
                [admission] = await conn.run_sync(run)
            return admission

        await _check_first_worker_seen(db, admit_while_first_finishes)

    async def test_the_same_through_sqlite3_as_sqlite_group_commit_runs_it(
        self, tmp_path: Path
    ) -> None:
        url = sqlite_url(tmp_path / "admission.db")
        await migrate(url)
        db = Database(url)
        try:

            async def admit_while_first_finishes(request: ClaimRequest) -> Admission:
                def run() -> list[Admission]:
                    connection = sqlite3.connect(tmp_path / "admission.db", isolation_level=None)
                    try:
                        connection.execute("BEGIN IMMEDIATE")
                        statements = _FirstWorkerFinishes(Sqlite3Statements(connection))
                        admissions = admit_all(statements, [request], utc_now())
                        connection.execute("COMMIT")
                        return admissions
                    finally:
                        connection.close()

                [admission] = await asyncio.to_thread(run)
                return admission

            await _check_first_worker_seen(db, admit_while_first_finishes)
        finally:
            await db.dispose()


if POSTGRES_URL:

    class TestWriterPlans:
        async def test_inbox_reads_and_ends_of_claims_go_through_the_keys_on_new_tables(
            self,
        ) -> None:
            """On a new database the tables are nearly empty and never analyzed, and the
            plan PostgreSQL keeps for a prepared statement (the generic one, after five
            runs) scans the whole table: the writer's connection has the admission's inbox
            read and the end of claims go through the primary key even so."""
            async with fresh_postgres_database() as url:
                db = Database(url)
                await upgrade(db)
                connection = await writer_connection(asyncpg_dsn(db.url))
                try:
                    await connection.execute("SET plan_cache_mode = force_generic_plan")
                    keys = [("tool-x", f"call-{n}") for n in range(64)]
                    inbox = await _plan(
                        connection,
                        PROCESSED_SQL,
                        [consumer for consumer, _ in keys],
                        [key for _, key in keys],
                    )
                    p = Parameters()
                    claims = await _plan(connection, end_claims_sql(p, keys), *p.values)
                finally:
                    await connection.close()
                    await db.dispose()
            assert _scans(inbox, "ballast_inbox") == {"Index Scan"}, inbox
            assert _scans(claims, "ballast_claim") == {"Index Scan"}, claims

    async def _plan(connection: asyncpg.Connection, sql: str, *args: Any) -> dict[str, Any]:
        shown = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
        plan: dict[str, Any] = json.loads(shown)[0]["Plan"]
        return plan

    def _scans(plan: dict[str, Any], table: str) -> set[str]:
        """The kinds of scan of ``table`` anywhere in ``plan``."""
        kind = plan["Node Type"]
        found = {kind} if kind.endswith("Scan") and plan.get("Relation Name") == table else set()
        for child in plan.get("Plans", []):
            found |= _scans(child, table)
        return found

    class TestUnsyncedCommits:
        async def test_writes_that_need_no_sync_go_on_a_connection_that_does_not_wait_for_it(
            self,
        ) -> None:
            """Claims alone commit on the writer's second connection, whose commits do not
            wait for the log's flush; the synced connection sees them at once: the claim a
            worker took is ended by its result, and the next delivery is answered from the
            inbox."""
            async with fresh_postgres_database() as url:
                db = Database(url)
                await upgrade(db)
                dsn = asyncpg_dsn(db.url)
                check = await asyncpg.connect(dsn)
                writer = AsyncpgWriter(db.url)
                try:
                    [first] = (await writer([_claiming("k")])).admissions
                    after_claims = await _writer_connections(check)
                    await writer([_processing("k")])
                    after_result = await _writer_connections(check)
                    [again] = (await writer([_claiming("k")])).admissions
                    claims = await check.fetchval("SELECT count(*) FROM ballast_claim")
                    modes = [await _synchronous_commit(dsn, synced=s) for s in (True, False)]
                finally:
                    await writer.dispose()
                    await check.close()
                    await db.dispose()
            assert modes == ["on", "off"]
            assert after_claims == {"ballast group commit, unsynced"}
            assert after_result == {"ballast group commit, unsynced", "ballast group commit"}
            assert (first.claimed, again.processed, claims) == (True, True, 0)

    async def _writer_connections(check: asyncpg.Connection) -> set[str]:
        """The names of the writer's open connections."""
        rows = await check.fetch(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'ballast group%'"
        )
        return {row["application_name"] for row in rows}

    async def _synchronous_commit(dsn: str, *, synced: bool) -> str:
        connection = await writer_connection(dsn, synced=synced)
        try:
            return str(await connection.fetchval("SHOW synchronous_commit"))
        finally:
            await connection.close()

    class TestDeferredOutcomesAlongside:
        """On PostgreSQL a step's deferred outcome is written on the writer's other
        connection while the next request's one statement runs, not before it."""

        async def test_the_next_step_does_not_wait_for_the_previous_outcome(self) -> None:
            """The row of the previous step is locked elsewhere, so its outcome waits:
            the next step's request commits meanwhile, and the commit returns once both
            are written."""
            async with _postgres_db() as (db, check):
                await _pending_step(db, 1)
                async with check.transaction():
                    await check.execute(
                        "SELECT 1 FROM ballast_journal WHERE task_id = 't' AND seq = 1 FOR UPDATE"
                    )
                    async with UnitOfWork(db, wait=False) as uow:
                        finish_step(uow, task_id="t", seq=1, status=StepStatus.COMPLETED, outcome=1)
                    asking = asyncio.create_task(_pending_step(db, 2, message_id="msg-2"))
                    await eventually(
                        lambda: _journal_has(db, 2), what="the next step, committed meanwhile"
                    )
                    assert not asking.done(), "the commit returned before the outcome was written"
                await asking
                journal = await load_journal(db, "t")
                assert (journal[1].status, journal[1].outcome) == (StepStatus.COMPLETED.value, 1)
                assert journal[2].status == StepStatus.PENDING.value

        async def test_an_outcome_that_fails_does_not_fail_the_next_step(self) -> None:
            """A deferred outcome the database refuses is logged as not written; the
            request it rode along with commits and its caller learns nothing of it."""
            async with _postgres_db() as (db, _):
                await _pending_step(db, 1)
                async with UnitOfWork(db, wait=False) as uow:
                    uow.update(_MISSING_TABLE, {"b_task_id": "t"})
                with capture_logs() as logs:
                    await _pending_step(db, 2, message_id="msg-2")
                assert await _journal_has(db, 2)
                assert await _count(db, OutboxMessage) == 1
                assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
                    "group_commit.outcomes_not_written"
                ]
                await _pending_step(db, 3)  # the connection is replaced

    _MISSING_TABLE = update(Table("ballast_missing", MetaData(), Column("task_id", String))).values(
        task_id=bindparam("b_task_id")
    )

    @contextlib.asynccontextmanager
    async def _postgres_db() -> AsyncIterator[tuple[Database, asyncpg.Connection]]:
        """A migrated database of the test's own, and a connection of the test's own to it."""
        async with fresh_postgres_database() as url:
            db = Database(url)
            await upgrade(db)
            check = await asyncpg.connect(asyncpg_dsn(db.url))
            try:
                yield db, check
            finally:
                await check.close()
                await db.dispose()

    async def _pending_step(db: Database, seq: int, *, message_id: str | None = None) -> None:
        """An agent's request: step ``seq`` of task "t" recorded pending, with its message."""
        async with UnitOfWork(db) as uow:
            record_step(
                uow, task_id="t", seq=seq, kind="tool", name="s", request=None,
                status=StepStatus.PENDING,
            )  # fmt: skip
            if message_id is not None:
                uow.publish("out.subject", b"payload", message_id=message_id)

    async def _journal_has(db: Database, seq: int) -> bool:
        return seq in await load_journal(db, "t")

    class TestAdmissionThroughAsyncpg:
        async def test_a_worker_that_finishes_during_admission_is_seen(self) -> None:
            """The same through asyncpg alone, as PostgreSQL's group commit runs it."""
            async with fresh_postgres_database() as url:
                db = Database(url)
                await upgrade(db)
                try:

                    async def admit_while_first_finishes(request: ClaimRequest) -> Admission:
                        connection = await asyncpg.connect(asyncpg_dsn(db.url))
                        try:
                            async with connection.transaction():
                                statements = _FirstWorkerFinishes(AsyncpgStatements(connection))
                                [admission] = await greenlet_spawn(
                                    admit_all, statements, [request], utc_now()
                                )
                        finally:
                            await connection.close()
                        return admission

                    await _check_first_worker_seen(db, admit_while_first_finishes)
                finally:
                    await db.dispose()

        async def test_a_connection_the_server_ended_is_replaced(self) -> None:
            """The server ends group commit's connection between two transactions (a restart,
            an idle timeout). The next transaction fails as a database error (nothing of it
            kept) if the connection has not heard of it yet, else opens a new connection;
            either way the one after commits on a new connection."""
            async with fresh_postgres_database() as url:
                db = Database(url)
                await upgrade(db)
                try:
                    await _unit(db, 1)
                    async with db.engine.connect() as conn:
                        await conn.execute(_END_OTHER_BACKENDS)
                    try:
                        await _unit(db, 2)
                        expected = ["key-1", "key-2", "key-3"]
                    except DatabaseError:
                        expected = ["key-1", "key-3"]
                    await _unit(db, 3)
                    connection = await asyncpg.connect(asyncpg_dsn(db.url))
                    try:
                        keys = await connection.fetch("SELECT key FROM ballast_inbox ORDER BY key")
                    finally:
                        await connection.close()
                    assert [row["key"] for row in keys] == expected
                finally:
                    await db.dispose()

        async def test_one_statement_stores_what_the_transaction_of_statements_stores(
            self,
        ) -> None:
            """A write without claims or updates goes as one statement: the same rows, with
            the same values (JSON, timestamps, bytes, NULLs), as through the statements."""
            async with fresh_postgres_database() as url:
                db = Database(url)
                await upgrade(db)
                connection = await asyncpg.connect(asyncpg_dsn(db.url))
                try:
                    units = {way: [_step_writes(way, n) for n in range(3)] for way in WAYS}
                    assert all(fits_one_statement(u) for u in units.values())
                    async with connection.transaction():
                        by_statements = await greenlet_spawn(
                            write_staged, AsyncpgStatements(connection), units["statements"]
                        )
                    in_one = await write_in_one_statement(connection, units["one"])
                    stored = {way: await _stored(connection, way) for way in WAYS}
                    assert stored["one"] == stored["statements"]
                    assert [len(rows) for rows in stored["one"].values()] == [3, 3, 3, 6]
                    for way, written in (("statements", by_statements), ("one", in_one)):
                        ids = await connection.fetch(
                            "SELECT id, message_id FROM ballast_outbox WHERE subject = $1"
                            " ORDER BY id",
                            f"{way}.out",
                        )
                        assert [(c.row_id, c.message.message_id) for c in written.committed] == [
                            (row["id"], row["message_id"]) for row in ids
                        ]
                    writer = AsyncpgWriter(db.url)
                    try:
                        with pytest.raises(AlreadyProcessedError):  # as through the statements
                            await writer([_step_writes("one", 0)])
                    finally:
                        await writer.dispose()
                finally:
                    await connection.close()
                    await db.dispose()

    WAYS = ("statements", "one")

    def _step_writes(way: str, n: int) -> StagedWrites:
        """What a tool's result and an agent's next request write, labelled by ``way``."""
        now = utc_now()
        staged = StagedWrites(
            inbox=[{"consumer": way, "key": f"k{n}", "processed_at": now, "result": b"\x00r"}],
            ended_claims=[(way, f"other{n}")],
            outbox=[
                {
                    "message_id": f"{way}-{n}-{i}",
                    "subject": f"{way}.out",
                    "payload": f"payload {i}".encode(),
                    "headers": {"Ballast-Task-Id": f"t{n}", "n": str(i)},
                    "created_at": now,
                    "attempts": 0,
                    "producer": None if i else way,
                }
                for i in range(2)
            ],
            sent=[],
        )
        staged.insert(
            JournalEntry,
            {
                "task_id": f"{way}-{n}", "seq": n, "kind": "tool", "name": "noop",
                "request": {"args": {"n": n, "text": "é"}}, "status": StepStatus.PENDING.value,
                "outcome": None, "usage": None, "started_at": now, "finished_at": None,
            },
        )  # fmt: skip
        staged.insert(
            AuditRecord,
            {
                "at": now, "task_id": f"{way}-{n}", "call_id": f"c{n}", "agent": "a",
                "tool": "noop", "user_id": "u", "tenant": "t", "verdict": "allowed",
                "rule": "allowed", "reason": "",
            },
        )  # fmt: skip
        return staged

    async def _stored(connection: asyncpg.Connection, way: str) -> dict[str, list[Any]]:
        """The rows written by ``way``, its label replaced, ids and times left out."""
        queries = {
            "inbox": "SELECT key, result FROM ballast_inbox WHERE consumer = $1 ORDER BY key",
            "journal": "SELECT seq, kind, name, request::text, status, outcome::text, usage::text,"
            " finished_at FROM ballast_journal WHERE task_id LIKE $1 || '-%' ORDER BY seq",
            "audit": "SELECT call_id, agent, tool, verdict, reason FROM ballast_audit"
            " WHERE task_id LIKE $1 || '-%' ORDER BY call_id",
            "outbox": "SELECT replace(message_id, $1, ''), payload, headers::text, attempts,"
            " producer IS NULL, sent_at FROM ballast_outbox WHERE subject = $1 || '.out'"
            " ORDER BY id",
        }
        return {
            name: [tuple(row) for row in await connection.fetch(sql, way)]
            for name, sql in queries.items()
        }

    _END_OTHER_BACKENDS = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


async def _check_first_worker_seen(
    db: Database, admit_while_first_finishes: Callable[[ClaimRequest], Awaitable[Admission]]
) -> None:
    lease = timedelta(seconds=30)
    assert (await admit(db, "consumer", "k", "first", lease)).claimed
    request = ClaimRequest("consumer", "k", "second", utc_now() + lease)
    admission = await admit_while_first_finishes(request)
    assert admission.processed, "the finished input was admitted to run again"
    assert (admission.result, admission.claimed) == (b"done", False)
    async with db.session() as session:
        assert list(await session.scalars(select(Claim))) == [], "a claim was left behind"


class _FirstWorkerFinishes:
    """Admission statements; right after the claims are written, worker 'first' finishes
    input 'k' (its inbox entry in, its claim gone) on the same connection."""

    def __init__(self, statements: Statements) -> None:
        self._statements = statements

    def claim(self, requests: Sequence[ClaimRequest], now: datetime) -> dict[tuple[str, str], str]:
        holders = self._statements.claim(requests, now)
        entry = {"consumer": "consumer", "key": "k", "processed_at": utc_now(), "result": b"done"}
        self._statements.insert_inbox([entry])
        self._statements.end_claims([("consumer", "k")])
        return holders

    def processed(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes | None]:
        return self._statements.processed(keys)

    def end_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        self._statements.end_claims(keys)


@pytest.mark.parametrize("units", [1, 3])
async def test_failed_shared_transaction_reports_to_every_unit(
    db: Database, tmp_path: Path, units: int
) -> None:
    """A commit that fails for all (no database there) fails every waiting unit."""
    # A directory is no SQLite file; a database that does not exist is no PostgreSQL one.
    url = sqlite_url(tmp_path) if db.is_sqlite else db.url.set(database="ballast_no_such_db")
    broken = Database(url)
    try:
        outcomes = await asyncio.gather(
            *(_unit(broken, n) for n in range(units)), return_exceptions=True
        )
    finally:
        await broken.dispose()
    assert all(isinstance(o, DatabaseError) for o in outcomes), outcomes
    assert broken.group.units == 0
