"""``ballast approvals``: decide the tool calls that wait for a human."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from contracts.approval import ApprovalStatus
from services.approvals import Approvals
from services.cli.common import client_for, fail, load_settings, run
from services.cli.console import console
from services.keys import resolve_keys

app = typer.Typer(help="Tool calls that need a human's approval: list, approve, deny, serve.")


@app.command("ls")
def list_(
    every: Annotated[bool, typer.Option("--all", help="Decided ones too.")] = False,
) -> None:
    """List approvals waiting for a decision (or all of them)."""

    async def main() -> None:
        async with client_for(load_settings()) as client:
            store = Approvals(client.js)
            await store.start()
            table = Table("id", "agent", "tool", "status", "user", "reason", "expires")
            for stored in await store.all():
                r = stored.request
                if every or r.status is ApprovalStatus.PENDING:
                    table.add_row(
                        r.approval_id, r.agent, r.tool, r.status.value, r.principal.user_id,
                        r.reason, r.expires_at.isoformat(timespec="seconds"),
                    )  # fmt: skip
            console.print(table)

    run(main())


@app.command()
def show(
    approval_id: Annotated[str, typer.Argument(help="The id from 'ballast approvals ls'.")],
) -> None:
    """Show one approval in full: what would run, for whom, and why it needs approval."""

    async def main() -> None:
        async with client_for(load_settings()) as client:
            store = Approvals(client.js)
            await store.start()
            console.print_json((await store.find(approval_id)).request.model_dump_json())

    run(main())


def _decide(approval_id: str, approve: bool, by: str) -> None:
    settings = load_settings()

    async def main() -> None:
        async with client_for(settings) as client:
            store = Approvals(client.js)
            await store.start()
            stored = await store.find(approval_id)
            decided = await store.decide(
                stored.request.agent, approval_id, approve=approve, approver=by,
                key=resolve_keys(settings).signer,
            )  # fmt: skip
            console.print(f"{approval_id}: {decided.request.status.value}; the task resumes")

    run(main())


ByOption = Annotated[str, typer.Option("--by", help="Who decides (recorded with the decision).")]


@app.command()
def approve(approval_id: str, by: ByOption = "cli") -> None:
    """Approve a call: sign a grant for exactly its arguments and resume its task."""
    _decide(approval_id, True, by)


@app.command()
def deny(approval_id: str, by: ByOption = "cli") -> None:
    """Deny a call and resume its task (the call fails with approval_denied)."""
    _decide(approval_id, False, by)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
) -> None:
    """Serve the approval HTTP endpoint (needs BALLAST_ADMIN_TOKEN)."""
    settings = load_settings()
    if settings.admin_token is None:
        fail(
            "set BALLAST_ADMIN_TOKEN: the approval endpoint never runs without authentication",
            code=2,
        )
    token = settings.admin_token.get_secret_value()

    async def main() -> None:
        async with client_for(settings) as client:
            store = Approvals(client.js)
            await store.start()
            import uvicorn

            from services.approval_api import approval_app

            api = approval_app(store, token=token, signer=resolve_keys(settings).signer)
            server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
            console.print(f"approvals on http://{host}:{port}/approvals")
            await server.serve()

    run(main())
