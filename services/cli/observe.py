"""``ballast trace``, ``ballast tasks ls``, ``ballast costs``, ``ballast replay``."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

import typer
from pydantic import JsonValue
from rich.console import Group
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text
from rich.tree import Tree

from contracts.wire import utc_now
from outbox.journal import load_journal
from services.cli.common import JsonOption, database, fail, load_settings, reported, run
from services.cli.console import console
from services.llm import ChatModel
from services.loader import load_services
from services.replay import ReplayReport, replay_run
from services.settings import Settings
from services.specs import AgentSpec
from services.trace import TaskTrace, TraceStep, costs, parse_since, tasks, trace

DEMO_APP = "services.examples.support:app"

tasks_app = typer.Typer(help="Find tasks by agent, user, status and time.")


def _money(value: Decimal | None) -> str:
    return f"${value:.6f}" if value else ""


def _detail(label: str, value: str, style: str = "dim") -> Text:
    """One line of detail, cut at the terminal's edge; the value is shown as text, never markup."""
    line = Text("  ")
    line.append(label, style=style)
    line.append(f" {value}")
    line.no_wrap = True
    line.overflow = "ellipsis"
    return line


def _step_line(step: TraceStep) -> Group:
    parts = [f"[bold]{step.seq}[/] {step.kind} [cyan]{escape(step.name)}[/]", step.status]
    if step.duration_ms is not None:
        parts.append(f"{step.duration_ms:.1f} ms")
    if step.input_tokens is not None:
        parts.append(f"tokens {step.input_tokens}/{step.output_tokens}")
    if step.cost_usd:
        parts.append(_money(step.cost_usd))
    if step.attempts and step.attempts > 1:
        parts.append(f"attempts {step.attempts}")
    for decision in step.decisions:
        rule = f" ({escape(decision.rule)})" if decision.rule != decision.verdict else ""
        parts.append(f"[magenta]{decision.verdict}[/]{rule}")
    lines: list[Text] = [Text.from_markup("  ".join(parts))]
    if step.request is not None and step.kind in ("tool", "compensation", "memory", "retrieve"):
        lines.append(_detail("args", json.dumps(step.request)))
    if step.outcome is not None:
        lines.append(_detail("->", json.dumps(step.outcome, default=str)))
    for label, sources, style in (
        ("retrieved:", step.retrieved_in_context, "dim"),
        ("untrusted in context:", step.untrusted_in_context, "yellow"),
    ):
        lines.extend(_detail(label, _where(source), style) for source in sources)
    return Group(*lines)


def _where(source: JsonValue) -> str:
    """A provenance as 'source document#chunk (trusted, fetched ...)'."""
    if not isinstance(source, dict):
        return str(source)
    shown = f"{source.get('source')} {source.get('document_id') or ''}"
    if source.get("chunk") is not None:
        shown += f"#{source['chunk']}"
    label = "trusted" if source.get("trusted") else "untrusted"
    fetched = source.get("fetched_at")
    return f"{shown} ({label}{f', fetched {fetched}' if fetched else ''})"


def render(trace_: TaskTrace, tree: Tree | None = None) -> Tree:
    """A rich tree of the run, children nested under their delegate steps."""
    head = (
        f"[bold]task {trace_.task_id}[/] {trace_.agent}  user {trace_.user_id}@{trace_.tenant}  "
        f"[bold]{trace_.status}[/]"
    )
    if trace_.duration_ms is not None:
        head += f" in {trace_.duration_ms:.0f} ms"
    head += f"  tokens {trace_.input_tokens}/{trace_.output_tokens}  {_money(trace_.cost_usd)}"
    node = tree.add(head) if tree is not None else Tree(head)
    if trace_.error:
        error = trace_.error
        shown = (
            f"{error.get('code')}: {error.get('message')}"
            if isinstance(error, dict)
            else json.dumps(error)
        )
        node.add(_detail("error", shown, "red"))
    for step in trace_.steps:
        child = node.add(_step_line(step))
        if step.child is not None:
            render(step.child, child)
    if trace_.compensations:
        comp = node.add("[bold]compensations[/] (newest first)")
        for step in trace_.compensations:
            comp.add(_step_line(step))
    if trace_.budget:
        budget = node.add("[bold]budget[/]")
        for line in trace_.budget:
            budget.add(f"{line.scope} {line.metric}: {line.spent} of {line.limit}")
    return node


def trace_command(
    task_id: Annotated[str, typer.Argument(help="The task to explain.")],
    as_json: JsonOption = False,
) -> None:
    """Show what a task did and why: steps, timing, tokens, cost, calls, decisions, children."""

    async def main() -> None:
        async with database() as db:
            found = await trace(db, task_id)
        if found is None:
            fail(f"no journal for task {task_id} in this database; see 'ballast tasks ls'")
        if as_json:
            console.print_json(found.model_dump_json())
        else:
            console.print(render(found))

    run(main())


@tasks_app.command("ls")
def tasks_ls(
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user id.")] = None,
    status: Annotated[
        str | None, typer.Option(help="completed, failed, budget_exceeded, running.")
    ] = None,
    since: Annotated[str, typer.Option(help="How far back: 30m, 6h, 1d, 2w.")] = "1d",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recent tasks, newest first."""
    with reported():
        window = parse_since(since)

    async def main() -> None:
        async with database() as db:
            found = await tasks(
                db, agent=agent, user=user, status=status, since=utc_now() - window, limit=limit
            )
        if as_json:
            console.print_json(json.dumps([t.model_dump(mode="json") for t in found]))
            return
        # The full id, never cut: it is what `ballast trace` and `ballast replay` take.
        table = Table(Column("task", no_wrap=True, min_width=32), "agent", "user", "status")
        table.add_column("started (UTC)", no_wrap=True)
        table.add_column("ms", justify="right")
        for t in found:
            took = (
                (t.finished_at - t.started_at) / timedelta(milliseconds=1)
                if t.finished_at
                else None
            )
            table.add_row(
                t.task_id, t.agent, t.user_id or "", t.status,
                f"{t.started_at:%m-%d %H:%M:%S}", f"{took:.0f}" if took else "",
            )  # fmt: skip
        console.print(table)

    run(main())


def costs_command(
    by: Annotated[str, typer.Option(help="Group by user, agent, model, task or day.")] = "agent",
    since: Annotated[str, typer.Option(help="How far back: 30m, 6h, 1d, 2w.")] = "1d",
    as_json: JsonOption = False,
) -> None:
    """Tokens and cost of model calls, grouped."""
    if by not in ("user", "agent", "model", "task", "day"):
        fail("--by must be user, agent, model, task or day", code=2)
    with reported():
        window = parse_since(since)

    async def main() -> None:
        async with database() as db:
            lines = await costs(db, by=by, since=utc_now() - window)
        if as_json:
            console.print_json(json.dumps([line.model_dump(mode="json") for line in lines]))
            return
        table = Table(by, "model calls", "input tokens", "output tokens", "cost")
        for line in lines:
            table.add_row(
                line.key, str(line.calls), str(line.input_tokens), str(line.output_tokens),
                f"${line.cost_usd:.6f}",
            )  # fmt: skip
        console.print(table)

    run(main())


def _live_model(name: str, specs: list[AgentSpec], settings: Settings) -> ChatModel:
    for spec in specs:
        if spec.model is not None and spec.model.name == name:
            return spec.model
    # Any other name is a model of an OpenAI-compatible endpoint (its SDK is slow to import).
    from services.openai_model import OpenAIChatModel

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIChatModel(name, base_url=settings.openai_base_url, api_key=key)


def replay_command(
    task_id: Annotated[str, typer.Argument(help="The task to replay.")],
    target: Annotated[
        str, typer.Option("--app", help="MODULE:APP with the agent's code.")
    ] = DEMO_APP,
    live_model: Annotated[
        str | None, typer.Option(help="Ask this model instead of the recorded answers.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-run a task's agent code against its journal, with no side effects, and compare.

    Exits 0 when every step matched, 1 when the replay differs, 2 for an unknown task or agent.
    """
    settings = load_settings()
    with reported():
        _, specs = load_services(target)
    agents = [s for s in specs if isinstance(s, AgentSpec)]

    async def main() -> None:
        async with database() as db:
            journal = await load_journal(db, task_id)
        if not journal:
            fail(f"no journal for task {task_id} in this database", code=2)
        agent = str(journal[0].name) if 0 in journal else None
        spec = next((s for s in agents if s.name == agent), None)
        if spec is None:
            fail(f"{target} has no agent {agent!r}; give the app with --app", code=2)
        model = _live_model(live_model, agents, settings) if live_model else None
        report = await replay_run(spec, journal, task_id, model)
        if as_json:
            console.print_json(report.model_dump_json())
        else:
            _print_replay(task_id, report)
        if not report.matched:
            raise typer.Exit(1)

    run(main())


def _print_replay(task_id: str, report: ReplayReport) -> None:
    verdict = "[green]matches its journal[/]" if report.matched else "[red]differs[/]"
    console.print(
        f"replay of {task_id} ({report.agent}): {verdict}; "
        f"{report.steps_matched}/{report.steps_in_journal} steps matched; ended {report.ended}"
    )
    if report.divergence:
        d = report.divergence
        console.print(f"first divergence at step {d.seq}: expected {d.expected}, got {d.got}")
    for change in report.decision_changes:
        console.print(
            f"step {change.seq}: recorded {json.dumps(change.recorded)[:120]} | "
            f"{report.live_model}: {json.dumps(change.live)[:120]}"
        )
    if report.error:
        console.print(f"[dim]{report.error}[/]")
