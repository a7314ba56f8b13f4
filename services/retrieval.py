"""``ctx.retrieve``: documents found for a query, each with where it came from and how old it is.

A `Retriever` answers a query for one tenant; the default, `FullTextRetriever`,
searches the documents indexed in the service's database (`outbox.retrieval`:
FTS5 on SQLite, tsvector on PostgreSQL). Another store (a vector index) plugs in
through ``@app.agent(retriever=...)``.

A retrieval is a journaled step: a re-executed or replayed run gets the same
results, and ``ballast trace`` shows what was retrieved before each model call.
Every result carries its provenance (source, document, chunk, fetched time) and
its trusted/untrusted label; untrusted results taint the run like any other
untrusted content. With ``max_age_s``, results fetched longer ago are not used.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, JsonValue

from contracts.tasks import TaskRequest
from contracts.trust import Provenance
from contracts.wire import utc_now
from outbox import Database, UnitOfWork
from outbox.memory import invalidate_where
from outbox.retrieval import Indexed, index_document, search
from services.steps import LocalSteps, StepKind

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def document_tag(document_id: str) -> str:
    """The memory tag of what was derived from a document; re-indexing it invalidates them."""
    return f"doc:{document_id}"


async def index(
    db: Database,
    *,
    tenant: str,
    document_id: str,
    content: str,
    source: str,
    trusted: bool,
    fetched_at: datetime | None = None,
) -> tuple[Indexed, int]:
    """Index a document for ``tenant``; if its content changed, invalidate the memory
    entries tagged `document_tag` in the same transaction. Returns what was indexed and
    how many memory entries were invalidated."""
    now = utc_now()
    async with UnitOfWork(db) as uow:
        indexed = await index_document(
            uow, tenant=tenant, document_id=document_id, content=content, source=source,
            trusted=trusted, fetched_at=fetched_at or now, now=now,
        )  # fmt: skip
        stale = 0
        if indexed.changed and indexed.version > 1:
            stale = await invalidate_where(
                uow, tenant=tenant, tag=document_tag(document_id),
                reason=f"document {document_id} changed (version {indexed.version})", now=now,
            )  # fmt: skip
    return indexed, stale


class Retrieved(BaseModel):
    """One retrieved passage."""

    text: str
    provenance: Provenance
    indexed_at: datetime
    score: float


class Retriever(Protocol):
    """Finds passages for a query within one tenant's documents."""

    async def search(
        self, tenant: str, query: str, *, limit: int, fetched_after: datetime
    ) -> list[Retrieved]: ...


class FullTextRetriever:
    """Full-text search over the documents indexed in a Ballast database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self, tenant: str, query: str, *, limit: int, fetched_after: datetime
    ) -> list[Retrieved]:
        async with UnitOfWork(self._db) as uow:
            hits = await search(uow, tenant, query, limit=limit, fetched_after=fetched_after)
        return [
            Retrieved(
                text=h.text,
                provenance=Provenance(
                    source=h.source,
                    document_id=h.document_id,
                    chunk=str(h.chunk_no),
                    trusted=h.trusted,
                    fetched_at=h.fetched_at,
                ),
                indexed_at=h.indexed_at,
                score=h.score,
            )
            for h in hits
        ]


class Retrieval:
    """Retrieval for one run (``ctx.retrieve``), within the task's tenant."""

    def __init__(self, steps: LocalSteps, task: TaskRequest, retriever: Retriever | None) -> None:
        self._steps = steps
        self._task = task
        self._retriever = retriever

    async def __call__(
        self, query: str, *, limit: int = 5, max_age_s: float | None = None
    ) -> list[Retrieved]:
        """Passages for ``query``, best first; none fetched more than ``max_age_s`` ago."""
        request: JsonValue = {"query": query, "limit": limit, "max_age_s": max_age_s}

        async def work(uow: UnitOfWork) -> JsonValue:
            if self._retriever is None:
                raise RuntimeError("a replayed retrieval is answered from the journal")
            now = utc_now()
            oldest = now - timedelta(seconds=max_age_s) if max_age_s is not None else EPOCH
            found = await self._retriever.search(
                self._task.principal.tenant, query, limit=limit, fetched_after=oldest
            )
            return [r.model_dump(mode="json") for r in found]

        value = await self._steps.local_step(
            StepKind.RETRIEVE, "retrieve", request, work, provenance=_provenance
        )
        assert isinstance(value, list)
        return [Retrieved.model_validate(r) for r in value]


def _provenance(value: JsonValue) -> list[Provenance]:
    assert isinstance(value, list)
    return [Retrieved.model_validate(r).provenance for r in value]
