"""The ``ballast`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import JsonValue

from contracts.ids import new_id
from contracts.principal import Principal
from contracts.schema_export import SCHEMA_DIR, export_schemas, stale_schemas
from contracts.tasks import TaskRequest, TaskStatus
from services.cli import approvals, db, dlq, docs, keys, memory, observe
from services.cli.common import client_for, fail, load_settings, reported, run, until_stopped
from services.cli.console import console
from services.cli.dashboard import dashboard
from services.cli.run import run_service
from services.cli.status import status
from services.host import ServiceHost
from services.loader import load_services
from services.nats_config import render_config, render_credentials, users_for
from services.stack import local_stack

DEMO_APP = "services.examples.support:app"

app = typer.Typer(
    name="ballast",
    help="Run LLM agents and tools as services on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(dlq.app, name="dlq")
app.add_typer(db.app, name="db")
app.add_typer(memory.app, name="memory")
app.add_typer(docs.app, name="docs")
app.add_typer(keys.app, name="keys")
app.add_typer(approvals.app, name="approvals")
schema_app = typer.Typer(help="The JSON Schema files of the wire contract.")
app.add_typer(schema_app, name="schema")
app.command()(status)
app.command("trace")(observe.trace_command)
app.command("costs")(observe.costs_command)
app.command("replay")(observe.replay_command)
app.command("dashboard")(dashboard)
app.add_typer(observe.tasks_app, name="tasks")


@app.command()
def demo() -> None:
    """Run the demo once: embedded NATS + SQLite, one task through two agents and two tools."""
    from services.demo import run_demo

    result = run(run_demo(load_settings(), console))
    if result.status is not TaskStatus.COMPLETED:
        raise typer.Exit(1)


@app.command()
def up(
    target: Annotated[str, typer.Argument(help="MODULE:OBJECT of the app to run.")] = DEMO_APP,
) -> None:
    """Run every service of an app in one process, with an embedded broker if none is configured."""
    with reported():
        name, specs = load_services(target)
    settings = load_settings()

    async def main() -> None:
        async with local_stack(settings) as stack, ServiceHost(stack, specs, name=name):
            console.print(
                f"[bold]{name}[/] up on {stack.nats_url}: "
                + ", ".join(s.service for s in specs)
                + "  (Ctrl-C to stop)"
            )
            await until_stopped()

    run(main())


app.command("run")(run_service)


def _read_input(value: str) -> dict[str, JsonValue]:
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"the task input is not JSON: {exc}", code=2)
    if not isinstance(data, dict):
        fail("the task input must be a JSON object", code=2)
    return data


@app.command()
def publish(
    agent: Annotated[str, typer.Argument(help="The agent to run, e.g. triage.")],
    task_input: Annotated[
        str, typer.Argument(metavar="JSON|@FILE", help="The task input: a JSON object or @file.")
    ],
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 60.0,
    task_id: Annotated[str | None, typer.Option(help="Idempotency key; random if omitted.")] = None,
    user: Annotated[str, typer.Option(help="Principal: user id.")] = "cli",
    tenant: Annotated[str, typer.Option(help="Principal: tenant.")] = "default",
    scope: Annotated[
        list[str] | None, typer.Option(help="Principal: a scope (repeatable).")
    ] = None,
    session: Annotated[
        str | None, typer.Option(help="The session (conversation) the task belongs to.")
    ] = None,
) -> None:
    """Publish a task to ballast.task.AGENT; with --wait, print how it ended."""
    data = _read_input(task_input)
    settings = load_settings()
    with reported():
        task = TaskRequest(
            agent=agent,
            input=data,
            principal=Principal(user_id=user, tenant=tenant, scopes=tuple(scope or ())),
            task_id=task_id or new_id(),
            session_id=session,
        )

    async def main() -> TaskStatus | None:
        async with client_for(settings) as client:
            fresh = await client.submit(task)
            console.print(f"task {task.task_id} {'published' if fresh else 'already published'}")
            if not wait:
                return None
            result = await client.wait(task.task_id, timeout_s=timeout)
            console.print_json(result.model_dump_json())
            return result.status

    status_ = run(main())
    if status_ is not None and status_ is not TaskStatus.COMPLETED:
        raise typer.Exit(1)


@app.command("nats-config")
def nats_config(
    target: Annotated[str, typer.Argument(help="MODULE:OBJECT of the app.")] = DEMO_APP,
    out: Annotated[Path, typer.Option(help="Directory for nats.conf and credentials.")] = Path(
        "nats-config"
    ),
) -> None:
    """Write a nats-server config with one user per service, each allowed only its own subjects.

    Also writes credentials/<user>.env (BALLAST_NATS_NKEY_SEED, BALLAST_NATS_INBOX_PREFIX)
    for every service, for 'admin' (operators) and 'client' (applications). Keep them secret.
    """
    with reported():
        _, specs = load_services(target)
    users = users_for(specs)
    creds = out / "credentials"
    creds.mkdir(parents=True, exist_ok=True)
    (out / "nats.conf").write_text(render_config(users), encoding="utf-8")
    for user in users:
        path = creds / f"{user.name}.env"
        path.write_text(render_credentials(user), encoding="utf-8")
        path.chmod(0o600)
    console.print(f"wrote {out / 'nats.conf'} and {len(users)} credentials in {creds}")


@schema_app.command("export")
def schema_export(
    check: Annotated[
        bool, typer.Option(help="Only check that the committed files are current.")
    ] = False,
) -> None:
    """Write the JSON Schema of every wire message to contracts/schemas/."""
    if check:
        stale = stale_schemas()
        if stale:
            fail(f"out of date: {', '.join(stale)}; run 'ballast schema export'")
        console.print(f"schemas in {SCHEMA_DIR} are current")
        return
    for path in export_schemas():
        console.print(f"wrote {path}")
