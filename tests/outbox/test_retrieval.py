"""Full-text retrieval on SQLite (FTS5) and PostgreSQL (tsvector): chunking, ranking,
tenants kept apart, re-indexing, and the maximum age of what is returned."""

from __future__ import annotations

from datetime import timedelta

from contracts.wire import utc_now
from outbox import Database, UnitOfWork
from outbox.retrieval import chunk, index_document, search

EPOCH = utc_now() - timedelta(days=365)

RUNBOOK = """Checkout returns 502 errors when the payment gateway times out.

Restart the gateway pods and watch the error rate for ten minutes.

Refunds are processed nightly by the billing job."""


async def _index(db: Database, tenant: str, document_id: str, content: str, **kw: object) -> bool:
    async with UnitOfWork(db) as uow:
        done = await index_document(
            uow, tenant=tenant, document_id=document_id, content=content,
            source=str(kw.get("source", "kb")), trusted=bool(kw.get("trusted", True)),
            fetched_at=kw.get("fetched_at", utc_now()), now=utc_now(),  # type: ignore[arg-type]
        )  # fmt: skip
    return done.changed


async def _search(db: Database, tenant: str, query: str, max_age: timedelta | None = None):  # type: ignore[no-untyped-def]
    async with UnitOfWork(db) as uow:
        after = utc_now() - max_age if max_age else EPOCH
        return await search(uow, tenant, query, limit=5, fetched_after=after)


def test_chunks_keep_paragraphs_whole_and_split_long_ones() -> None:
    assert chunk("one two\n\nthree", words=2) == ["one two", "three"]
    assert chunk("one two\n\nthree", words=10) == ["one two\n\nthree"]
    assert chunk(" ".join(str(n) for n in range(7)), words=3) == ["0 1 2", "3 4 5", "6"]
    assert chunk("   \n\n  ") == []


async def test_a_query_finds_the_matching_chunk_with_its_provenance(db: Database) -> None:
    await _index(db, "acme", "kb-101", RUNBOOK, source="runbooks")
    await _index(db, "acme", "kb-7", "Our office is closed on public holidays.")
    hits = await _search(db, "acme", "Why does checkout fail with 502?")
    assert hits, "stemmed words match (fail/fails, checkout)"
    best = hits[0]
    assert (best.document_id, best.chunk_no, best.source, best.trusted) == (
        "kb-101", 0, "runbooks", True,
    )  # fmt: skip
    assert "payment gateway" in best.text
    assert all(h.document_id != "kb-7" for h in hits)
    assert await _search(db, "acme", 'zebra* NEAR( "unbalanced') == [], "no query syntax"


async def test_one_tenant_never_retrieves_another_tenants_documents(db: Database) -> None:
    await _index(db, "acme", "kb-101", RUNBOOK)
    await _index(db, "globex", "secret", "The checkout gateway password is hunter2.")
    assert {h.document_id for h in await _search(db, "acme", "checkout gateway")} == {"kb-101"}
    assert {h.document_id for h in await _search(db, "globex", "checkout")} == {"secret"}


async def test_reindexing_replaces_the_chunks_and_same_content_changes_nothing(
    db: Database,
) -> None:
    assert await _index(db, "acme", "kb-101", RUNBOOK)
    assert not await _index(db, "acme", "kb-101", RUNBOOK)
    assert await _index(db, "acme", "kb-101", "Checkout now uses the new payment provider.")
    assert await _search(db, "acme", "restart pods") == []
    assert [h.document_id for h in await _search(db, "acme", "provider")] == ["kb-101"]


async def test_documents_fetched_before_the_maximum_age_are_left_out(db: Database) -> None:
    await _index(db, "acme", "old", "checkout advice", fetched_at=utc_now() - timedelta(days=3))
    await _index(db, "acme", "new", "checkout advice, revised")
    assert {h.document_id for h in await _search(db, "acme", "checkout")} == {"old", "new"}
    fresh = await _search(db, "acme", "checkout", timedelta(days=1))
    assert [h.document_id for h in fresh] == ["new"]
