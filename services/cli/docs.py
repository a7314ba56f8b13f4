"""``ballast docs``: index documents for ``ctx.retrieve``, and try a query as an agent would."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.cli.common import JsonOption, database, fail, run
from services.cli.console import console
from services.retrieval import EPOCH, FullTextRetriever, index

app = typer.Typer(help="Documents for retrieval (full-text, per tenant): index and search.")

TenantOption = Annotated[str, typer.Option(help="The tenant the documents belong to.")]


@app.command("index")
def index_(
    files: Annotated[list[Path], typer.Argument(help="Text files; each is one document.")],
    tenant: TenantOption,
    source: Annotated[str, typer.Option(help="Where they come from, e.g. kb or web.")],
    untrusted: Annotated[
        bool, typer.Option(help="Outsiders could have written them (web pages, tickets, mail).")
    ] = False,
    fetched_at: Annotated[
        datetime | None, typer.Option(help="When they were fetched (UTC); default: now.")
    ] = None,
) -> None:
    """Index files (document id: the file's name without suffix); a changed document
    replaces its chunks and invalidates memory tagged doc:<id>."""
    texts: dict[str, str] = {}
    for file in files:
        try:
            texts[file.stem] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {exc}", code=2)
    when = fetched_at.replace(tzinfo=fetched_at.tzinfo or UTC) if fetched_at else None

    async def main() -> None:
        async with database() as db:
            for document_id, content in texts.items():
                done, stale = await index(
                    db, tenant=tenant, document_id=document_id, content=content,
                    source=source, trusted=not untrusted, fetched_at=when,
                )  # fmt: skip
                what = f"version {done.version}, {done.chunks} chunks" if done.changed else "same"
                note = f"; {stale} memory entries invalidated" if stale else ""
                console.print(f"{document_id}: {what}{note}")

    run(main())


@app.command("search")
def search_(
    query: Annotated[str, typer.Argument(help="What an agent would ask.")],
    tenant: TenantOption,
    limit: Annotated[int, typer.Option(help="At most this many passages.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Show the passages ctx.retrieve would get for a query, best first."""

    async def main() -> None:
        async with database() as db:
            found = await FullTextRetriever(db).search(
                tenant, query, limit=limit, fetched_after=EPOCH
            )
        if as_json:
            console.print_json(json.dumps([r.model_dump(mode="json") for r in found]))
            return
        table = Table("document", "chunk", "source", "trusted", "score", "text")
        for r in found:
            p = r.provenance
            table.add_row(
                p.document_id or "", p.chunk or "", p.source, "yes" if p.trusted else "no",
                f"{r.score:.3g}", r.text[:80],
            )  # fmt: skip
        console.print(table)

    run(main())
