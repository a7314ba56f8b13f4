"""``ballast memory``: what agents remember, for operators: list, show, invalidate.

Operators look across owners (every user of a tenant, every scope); agent runs
never can (see `services.memory`). Invalidating keeps the entries for the record
but no run reads them again, e.g. everything derived from a document that changed:
``ballast memory invalidate --tag doc:kb-101 --reason "kb-101 was rewritten"``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from contracts.wire import utc_now
from outbox import UnitOfWork
from outbox import memory as store
from outbox.memory import Scope
from outbox.tables import MemoryRecord
from services.cli.common import JsonOption, database, fail, run
from services.cli.console import console

app = typer.Typer(help="Agents' memory across owners: list, show and invalidate entries.")

TenantOption = Annotated[str | None, typer.Option(help="Only this tenant.")]
ScopeOption = Annotated[
    Scope | None, typer.Option(help="Only this scope: task, session, user, tenant or agent.")
]
TagOption = Annotated[str | None, typer.Option(help="Only entries with this tag, e.g. doc:kb-101.")]
KeyOption = Annotated[str | None, typer.Option(help="Only entries with this key.")]


def _owner(record: MemoryRecord) -> str:
    return "/".join(json.loads(record.owner))


def _json(record: MemoryRecord, tags: list[str]) -> dict[str, object]:
    return {
        "id": record.id, "scope": record.scope, "owner": json.loads(record.owner),
        "key": record.key, "value": record.value, "source": record.source, "tags": tags,
        "version": record.version, "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "invalidated_at": record.invalidated_at.isoformat() if record.invalidated_at else None,
        "invalidated_reason": record.invalidated_reason,
    }  # fmt: skip


@app.command("ls")
def ls(
    tenant: TenantOption = None,
    scope: ScopeOption = None,
    tag: TagOption = None,
    key: KeyOption = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Also expired and invalidated entries.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List memory entries, most recently written first."""

    async def main() -> None:
        async with database() as db, UnitOfWork(db) as uow:
            found = await store.find(
                uow, utc_now(), tenant=tenant, scope=scope, key=key, tag=tag,
                include_dead=all_, limit=limit,
            )  # fmt: skip
            tags = await store.tags_of(uow, [r.id for r in found if r.id is not None])
        if as_json:
            console.print_json(json.dumps([_json(r, tags[r.id or 0]) for r in found]))
            return
        table = Table("id", "scope", "owner", "key", "v", "tags", "updated (UTC)", "state")
        for r in found:
            state = "invalidated" if r.invalidated_at else "expired" if _expired(r) else "live"
            table.add_row(
                str(r.id), r.scope, _owner(r), r.key, str(r.version),
                " ".join(tags[r.id or 0]), f"{r.updated_at:%m-%d %H:%M:%S}", state,
            )  # fmt: skip
        console.print(table)

    run(main())


def _expired(record: MemoryRecord) -> bool:
    return record.expires_at is not None and record.expires_at <= utc_now()


@app.command()
def show(
    memory_id: Annotated[int, typer.Argument(help="The entry's id, from 'ballast memory ls'.")],
) -> None:
    """Show one entry as JSON: value, source, tags, version and lifetime."""

    async def main() -> None:
        async with database() as db, UnitOfWork(db) as uow:
            record = await store.by_id(uow, memory_id)
            if record is None:
                fail(f"no memory entry {memory_id}; 'ballast memory ls' lists them", code=1)
            tags = await store.tags_of(uow, [memory_id])
        console.print_json(json.dumps(_json(record, tags[memory_id])))

    run(main())


@app.command()
def invalidate(
    reason: Annotated[str, typer.Option(help="Why: kept with the entries, for the record.")],
    tenant: TenantOption = None,
    scope: ScopeOption = None,
    tag: TagOption = None,
    key: KeyOption = None,
) -> None:
    """Invalidate the entries that match every filter given; no run reads them again."""
    if tenant is None and scope is None and tag is None and key is None:
        fail("say what to invalidate: --tag, --key, --scope and/or --tenant", code=2)

    async def main() -> int:
        async with database() as db, UnitOfWork(db) as uow:
            return await store.invalidate_where(
                uow, tenant=tenant, scope=scope, key=key, tag=tag, reason=reason, now=utc_now()
            )

    console.print(f"invalidated {run(main())} entries")
