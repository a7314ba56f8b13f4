"""Full-text retrieval over indexed documents, one tenant at a time.

A document is split into chunks of about `CHUNK_WORDS` words (on paragraph
boundaries where it can), stored in ``ballast_chunk`` and indexed by the
database's own full-text search: FTS5 with English stemming on SQLite, a
``tsvector`` with a GIN index on PostgreSQL (both made by the migrations).
A query matches chunks holding any of its words, best first (BM25 on SQLite,
``ts_rank`` on PostgreSQL).

Every hit says where it came from (source, document, chunk), whether its source
is trusted, and when it was fetched and indexed; `search` leaves out documents
fetched before ``fetched_after``, so a query can refuse stale content.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text, bindparam, delete, text
from sqlalchemy.types import TypeEngine
from sqlmodel import col

from outbox.columns import UtcDateTime
from outbox.conflict_insert import conflict_insert
from outbox.tables import ChunkRecord, DocumentRecord
from outbox.unit_of_work import UnitOfWork

CHUNK_WORDS = 200
"""Words per chunk, about: small enough to quote, large enough to carry context."""

_D = DocumentRecord.__table__  # type: ignore[attr-defined]  # SQLModel sets it at class creation
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk and where it came from."""

    document_id: str
    chunk_no: int
    text: str
    source: str
    trusted: bool
    fetched_at: datetime
    indexed_at: datetime
    score: float


@dataclass(frozen=True, slots=True)
class Indexed:
    document_id: str
    version: int
    chunks: int
    changed: bool
    """False when the same content was indexed again (nothing was rewritten)."""


def chunk(content: str, words: int = CHUNK_WORDS) -> list[str]:
    """Split ``content`` into chunks of about ``words`` words, keeping paragraphs whole
    where they fit."""
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", content)):
        tokens = paragraph.split()
        while tokens:
            room = words - sum(len(p.split()) for p in current)
            if len(tokens) <= room:
                current.append(" ".join(tokens))
                tokens = []
            elif current:
                chunks.append("\n\n".join(current))
                current = []
            else:
                chunks.append(" ".join(tokens[:words]))
                tokens = tokens[words:]
    if current:
        chunks.append("\n\n".join(current))
    return chunks


async def index_document(
    uow: UnitOfWork,
    *,
    tenant: str,
    document_id: str,
    content: str,
    source: str,
    trusted: bool,
    fetched_at: datetime,
    now: datetime,
) -> Indexed:
    """Index (or re-index) a document; its old chunks are replaced."""
    digest = hashlib.sha256(content.encode()).hexdigest()
    existing = await uow.session.get(DocumentRecord, (tenant, document_id))
    if existing is not None and existing.content_hash == digest:
        existing.fetched_at = fetched_at
        existing.source, existing.trusted = source, trusted
        return Indexed(document_id, existing.version, existing.chunks, changed=False)
    pieces = chunk(content)
    version = existing.version + 1 if existing else 1
    await uow.session.execute(
        delete(ChunkRecord).where(
            col(ChunkRecord.tenant) == tenant, col(ChunkRecord.document_id) == document_id
        )
    )
    fields = {
        "source": source, "trusted": trusted, "content_hash": digest, "version": version,
        "chunks": len(pieces), "fetched_at": fetched_at, "indexed_at": now,
    }  # fmt: skip
    await uow.session.execute(
        conflict_insert(_D, is_sqlite=uow.is_sqlite)
        .values(tenant=tenant, document_id=document_id, **fields)
        .on_conflict_do_update(index_elements=["tenant", "document_id"], set_=fields)
    )
    for n, piece in enumerate(pieces):
        uow.session.add(ChunkRecord(tenant=tenant, document_id=document_id, chunk_no=n, text=piece))
    return Indexed(document_id, version, len(pieces), changed=True)


_RESULT: dict[str, TypeEngine[Any] | type[TypeEngine[Any]]] = {
    "document_id": String, "chunk_no": Integer, "text": Text, "source": String,
    "trusted": Boolean, "fetched_at": UtcDateTime(), "indexed_at": UtcDateTime(), "score": Float,
}  # fmt: skip
"""Raw SQL has no column types of its own: these make the rows come back as the models'."""
_FETCHED_AFTER = bindparam("fetched_after", type_=UtcDateTime())

_SQLITE_SEARCH = (
    text(
        "SELECT c.document_id, c.chunk_no, c.text, d.source, d.trusted, d.fetched_at, "
        "d.indexed_at, -bm25(ballast_chunk_fts) AS score "
        "FROM ballast_chunk_fts JOIN ballast_chunk c ON c.id = ballast_chunk_fts.rowid "
        "JOIN ballast_document d ON d.tenant = c.tenant AND d.document_id = c.document_id "
        "WHERE ballast_chunk_fts MATCH :query AND c.tenant = :tenant "
        "AND d.fetched_at >= :fetched_after "
        "ORDER BY bm25(ballast_chunk_fts) LIMIT :limit"
    )
    .bindparams(_FETCHED_AFTER)
    .columns(**_RESULT)
)
_POSTGRES_SEARCH = (
    text(
        "SELECT c.document_id, c.chunk_no, c.text, d.source, d.trusted, d.fetched_at, "
        "d.indexed_at, ts_rank(c.search, q) AS score "
        "FROM ballast_chunk c, to_tsquery('english', :query) q, ballast_document d "
        "WHERE c.search @@ q AND c.tenant = :tenant "
        "AND d.tenant = c.tenant AND d.document_id = c.document_id "
        "AND d.fetched_at >= :fetched_after "
        "ORDER BY score DESC, c.id LIMIT :limit"
    )
    .bindparams(_FETCHED_AFTER)
    .columns(**_RESULT)
)


async def search(
    uow: UnitOfWork, tenant: str, query: str, *, limit: int, fetched_after: datetime
) -> list[Hit]:
    """The chunks of ``tenant``'s documents that best match ``query``."""
    words = sorted({w.lower() for w in _WORD.findall(query)})
    if not words:
        return []
    if uow.is_sqlite:
        statement = _SQLITE_SEARCH
        match = " OR ".join(f'"{w}"' for w in words)  # quoted: no FTS5 syntax from the user
        params: dict[str, object] = {"query": match, "fetched_after": fetched_after}
    else:
        statement = _POSTGRES_SEARCH
        params = {"query": " | ".join(words), "fetched_after": fetched_after}
    rows = await uow.session.execute(statement, {**params, "tenant": tenant, "limit": limit})
    return [
        Hit(
            document_id=r.document_id,
            chunk_no=r.chunk_no,
            text=r.text,
            source=r.source,
            trusted=bool(r.trusted),
            fetched_at=r.fetched_at,
            indexed_at=r.indexed_at,
            score=float(r.score),
        )
        for r in rows
    ]
