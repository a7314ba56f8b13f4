"""``ballast db``: the schema version of Ballast's tables, migrations and retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from contracts.wire import utc_now
from outbox.retention import RetentionPolicy, prune
from services.cli.common import database, fail, run
from services.cli.console import console
from services.trace import parse_since

app = typer.Typer(help="Ballast's tables: migrations and retention (BALLAST_DATABASE_URL).")


@app.command("upgrade")
def upgrade_() -> None:
    """Apply the migrations the database lacks (run once per deployment, before services)."""

    from outbox.schema import current_revision, upgrade  # Alembic is slow to import

    async def main() -> None:
        async with database() as db:
            before = await current_revision(db)
            after = await upgrade(db)
        moved = "already at" if before == after else f"upgraded from {before or 'nothing'} to"
        console.print(f"{db.safe_url}: {moved} revision {after}")

    run(main())


@app.command()
def current() -> None:
    """Show the database's revision and the one this code needs; exit 1 if they differ."""

    from outbox.schema import current_revision, head_revision

    async def main() -> bool:
        async with database() as db:
            found = await current_revision(db)
        needed = head_revision()
        console.print(f"{db.safe_url}: revision {found or 'none'}; this code needs {needed}")
        return found == needed

    if not run(main()):
        raise typer.Exit(1)


def _duration(text: str) -> timedelta:
    try:
        return parse_since(text)
    except ValueError as exc:
        fail(str(exc), code=2)


@app.command("prune")
def prune_(
    sent: Annotated[str, typer.Option("--sent-older-than", help="Sent outbox rows older.")] = "1d",
    journal: Annotated[
        str, typer.Option("--journal-older-than", help="Journals of runs that ended before.")
    ] = "30d",
    ended: Annotated[
        str,
        typer.Option("--ended-older-than", help="Invalidated or expired memory, closed sessions."),
    ] = "30d",
) -> None:
    """Delete sent outbox rows, finished journals and ended state now (services also do it
    every hour)."""
    policy = RetentionPolicy(
        sent_for=_duration(sent), journal_for=_duration(journal), ended_for=_duration(ended)
    )

    async def main() -> None:
        async with database() as db:
            pruned = await prune(db, policy, utc_now())
        console.print(
            f"pruned {pruned.outbox_rows} sent outbox rows and the journals of "
            f"{pruned.journal_tasks} tasks ({pruned.journal_rows} steps), "
            f"{pruned.memory_entries} ended memory entries and {pruned.sessions} closed sessions"
        )

    run(main())
