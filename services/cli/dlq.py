"""``ballast dlq``: inspect and redrive dead letters."""

from __future__ import annotations

from typing import Annotated

import typer
from nats.js import JetStreamContext
from rich.progress import Progress
from rich.table import Table

from services.cli.common import client_for, fail, load_settings, run
from services.cli.console import console
from services.dead_letters import (
    StoredDeadLetter,
    dead_letter,
    dead_letter_counts,
    dead_letters,
    purge,
    redrive,
)

app = typer.Typer(help="Dead-letter queues: messages that failed for good, kept for redrive.")

ServiceArg = Annotated[
    str | None, typer.Argument(help="A service, e.g. tool-create_ticket; all when omitted.")
]


@app.command("ls")
def list_(service: ServiceArg = None) -> None:
    """Count dead letters per service, or list those of SERVICE."""

    async def main() -> None:
        async with client_for(load_settings()) as client:
            if service is None:
                counts = await dead_letter_counts(client.js)
                table = Table("service", "dead letters")
                for name, count in counts.items():
                    table.add_row(name, str(count))
                console.print(table if counts else "no dead letters")
                return
            table = Table("seq", "subject", "code", "attempts", "last failure", "error")
            async for item in dead_letters(client.js, service):
                letter = item.letter
                table.add_row(
                    str(item.seq),
                    letter.subject,
                    letter.error.code.value,
                    str(letter.attempts),
                    letter.last_failure_at.isoformat(timespec="seconds"),
                    letter.error.message[:80],
                )
            console.print(table)

    run(main())


@app.command()
def show(
    seq: Annotated[int, typer.Argument(help="Sequence number from 'ballast dlq ls'.")],
) -> None:
    """Print one dead letter in full: payload, headers, error, attempts, times."""

    async def main() -> None:
        async with client_for(load_settings()) as client:
            item = await dead_letter(client.js, seq)
            console.print_json(item.letter.model_dump_json())

    run(main())


@app.command("redrive")
def redrive_(
    service: ServiceArg = None,
    seq: Annotated[int | None, typer.Option(help="Redrive only this dead letter.")] = None,
) -> None:
    """Publish dead letters to their original subject again (after the fault is fixed)."""
    if service is None and seq is None:
        fail("name a SERVICE (all its dead letters) or give --seq N", code=2)

    async def main() -> None:
        async with client_for(load_settings()) as client:
            chosen = await _chosen(client.js, service, seq)
            with Progress(console=console, transient=False) as progress:
                bar = progress.add_task("redriving", total=len(chosen))
                for item in chosen:
                    await redrive(client.js, item)
                    progress.advance(bar)
            console.print(f"redrove {len(chosen)} dead letter(s)")

    run(main())


async def _chosen(
    js: JetStreamContext, service: str | None, seq: int | None
) -> list[StoredDeadLetter]:
    if seq is not None:
        return [await dead_letter(js, seq)]
    return [item async for item in dead_letters(js, service)]


@app.command("purge")
def purge_(
    service: ServiceArg = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good (of SERVICE, or all)."""
    what = f"the dead letters of {service}" if service else "ALL dead letters"
    if not yes and not typer.confirm(f"Delete {what}?"):
        raise typer.Exit(1)

    async def main() -> None:
        async with client_for(load_settings()) as client:
            removed = await purge(client.js, service)
            console.print(f"purged {removed} dead letter(s)")

    run(main())
