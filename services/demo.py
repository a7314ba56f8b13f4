"""The demo behind ``make run``: one support request through two agents and two tools.

It starts the local stack (embedded nats-server, SQLite), hosts the example
services, publishes a task, watches every message that crosses the bus, and
prints the flow, the ticket the mutating tool wrote, and the task's result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from contracts.principal import Principal
from contracts.subjects import PREFIX, Header
from contracts.tasks import TaskRequest, TaskResult, TaskStatus
from services.client import BallastClient
from services.examples.support import Ticket, app
from services.host import ServiceHost
from services.keys import resolve_keys
from services.settings import Settings
from services.stack import local_stack

DEMO_MESSAGE = "Checkout fails with a 502 error since this morning's deploy"


@dataclass(frozen=True, slots=True)
class Seen:
    at_ms: float
    subject: str
    headers: dict[str, str]
    body: bytes


def describe(seen: Seen) -> str:
    """One line on what a message on the bus was."""
    data = json.loads(seen.body)
    kind = seen.subject.split(".")[1]
    if kind == "task":
        return f"task {data['task_id'][:8]} for {data['agent']}: {json.dumps(data['input'])[:60]}"
    if kind == "tool":
        return f"call {data['call_id'][:10]} of {data['tool']}: {json.dumps(data['args'])[:60]}"
    if kind == "result":
        what = data.get("tool") or data.get("agent")
        step = seen.headers.get(Header.STEP_KEY, "?")
        return f"result of {what} for step {step[:10]}: {data['status']}"
    if seen.subject.startswith(f"{PREFIX}.event.task."):
        return f"task {data['task_id'][:8]} of {data['agent']} {data['status']}"
    if seen.subject.startswith(f"{PREFIX}.event.auth."):
        return f"{data['verdict']}: {data['agent']} -> {data['tool']} ({data['rule']})"
    return json.dumps(data)[:90]


async def run_demo(settings: Settings, console: Console) -> TaskResult:
    """Run one task end to end and print what happened; return its result."""
    async with (
        local_stack(settings) as stack,
        ServiceHost(stack, app.specs, name="demo") as host,
        BallastClient(stack.nats_url or "", signer=resolve_keys(stack).signer) as client,
    ):
        console.print(f"[bold]broker[/] {stack.nats_url}   [bold]database[/] {host.db.safe_url}")
        seen: list[Seen] = []
        start = time.perf_counter()

        async def watch(msg: Msg) -> None:
            at = (time.perf_counter() - start) * 1000
            seen.append(Seen(at, msg.subject, dict(msg.headers or {}), msg.data))

        sub = await client.nc.subscribe(f"{PREFIX}.>", cb=watch)
        task = TaskRequest(
            agent="triage",
            input={"customer": "acme", "message": DEMO_MESSAGE},
            principal=Principal(user_id="demo-user", tenant="acme", scopes=("tickets:write",)),
        )
        console.print(f"[bold]publishing[/] task {task.task_id} to ballast.task.triage")
        result = await client.run(task, timeout_s=30)
        await client.nc.flush()
        await sub.unsubscribe()

        flow = Table(title="What crossed the bus", show_lines=False)
        flow.add_column("ms", justify="right")
        flow.add_column("subject")
        flow.add_column("what")
        for item in seen:
            flow.add_row(f"{item.at_ms:.1f}", item.subject, describe(item))
        console.print(flow)

        ticket_id = result.output.get("ticket_id") if isinstance(result.output, dict) else None
        if isinstance(ticket_id, str):
            async with host.db.session() as session:
                ticket = await session.get(Ticket, ticket_id)
            if ticket is not None:
                console.print(
                    f"[bold]ticket row[/] {ticket.id} customer={ticket.customer} "
                    f"priority={ticket.priority} title={ticket.title!r}"
                )
        style = "green" if result.status is TaskStatus.COMPLETED else "red"
        console.print(
            f"[bold {style}]task {result.status.value}[/] in {_duration_ms(result):.0f} ms"
        )
        console.print_json(result.model_dump_json())
        return result


def _duration_ms(result: TaskResult) -> float:
    return (result.finished_at - result.started_at).total_seconds() * 1000
