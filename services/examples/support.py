"""A support desk in four services, driven by deterministic scripted models.

- ``triage`` (agent) reads a customer message, asks its model for a category and
  a priority, delegates the research to ``research``, then opens a ticket.
- ``research`` (agent) searches the knowledge base with ``lookup`` and asks its
  model for a one-line summary.
- ``lookup`` (tool, read-only) searches a small in-memory knowledge base.
- ``create_ticket`` (tool, mutating) writes a ticket row and publishes
  ``ballast.event.ticket.created``, both in the transaction of its result.

Run it with ``ballast up`` (all four in one process) or one service each with
``ballast run services.examples.support:triage`` and so on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, String, Text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from bulkheads import PoolConfig, RetryPolicy
from contracts.budget import BudgetLimits
from contracts.subjects import event_subject
from contracts.tasks import TaskRequest
from contracts.trust import Sensitivity
from contracts.wire import utc_now
from outbox.columns import UtcDateTime
from services.agent_context import AgentContext
from services.app import Ballast
from services.budgets import BudgetPolicy
from services.llm import ChatMessage, ModelToolCall, ScriptedModel, ToolDefinition
from services.spotlight import DATA_RULE, unwrap
from services.tools import ToolContext

app = Ballast("support")

# ---------------------------------------------------------------- data


class Ticket(SQLModel, table=True):
    """A support ticket, the mutating tool's own table."""

    __tablename__ = "demo_ticket"

    id: str = SQLField(sa_column=Column(String(40), primary_key=True))
    customer: str = SQLField(sa_column=Column(String(200), nullable=False))
    title: str = SQLField(sa_column=Column(String(200), nullable=False))
    priority: str = SQLField(sa_column=Column(String(20), nullable=False))
    summary: str = SQLField(sa_column=Column(Text, nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime, nullable=False))


class TicketCreated(BaseModel):
    """Event published when a ticket was created."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket_id: str
    customer: str
    priority: str


KNOWLEDGE_BASE = (
    {
        "id": "kb-101",
        "title": "Checkout returns 502 after deploy",
        "text": "A 502 at checkout is usually the payment gateway timing out; "
        "restart the gateway pods and check its certificate.",
    },
    {
        "id": "kb-102",
        "title": "Password reset email not arriving",
        "text": "Reset emails are delayed when the mail queue is backed up; "
        "ask the customer to check spam and retry after ten minutes.",
    },
    {
        "id": "kb-103",
        "title": "Invoice shows wrong VAT",
        "text": "VAT is computed from the billing country; correct the country "
        "in the billing profile and reissue the invoice.",
    },
)

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


# ---------------------------------------------------------------- tools


class LookupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    limit: int = Field(default=2, ge=1, le=10)


@app.tool(pool=PoolConfig(size=4, timeout_s=5.0), sensitivity=Sensitivity.READ)
async def lookup(ctx: ToolContext, args: LookupArgs) -> dict[str, object]:
    """Search the knowledge base by word overlap; best matches first."""
    wanted = _words(args.query)
    scored = sorted(
        ((len(wanted & _words(a["title"] + " " + a["text"])), a) for a in KNOWLEDGE_BASE),
        key=lambda pair: (-pair[0], pair[1]["id"]),
    )
    return {"articles": [a for score, a in scored[: args.limit] if score > 0]}


class CreateTicketArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    priority: Literal["low", "normal", "high"]
    summary: str


@app.tool(
    pool=PoolConfig(size=2, timeout_s=5.0),
    retry=RetryPolicy(max_deliveries=4),
    scopes=("tickets:write",),
    sensitivity=Sensitivity.WRITE,
    events=("ticket.created",),
)
async def create_ticket(ctx: ToolContext, args: CreateTicketArgs) -> dict[str, object]:
    """Open a ticket: one row and one event, committed with the result or not at all."""
    # The id derives from the idempotency key: a retried call could never make a second ticket.
    ticket_id = "T-" + uuid.uuid5(uuid.NAMESPACE_URL, ctx.idempotency_key).hex[:8].upper()
    ctx.session.add(
        Ticket(
            id=ticket_id,
            customer=args.customer,
            title=args.title,
            priority=args.priority,
            summary=args.summary,
            created_at=utc_now(),
        )
    )
    ctx.publish(
        event_subject("ticket", "created"),
        TicketCreated(ticket_id=ticket_id, customer=args.customer, priority=args.priority),
    )
    return {"ticket_id": ticket_id}


# ---------------------------------------------------------------- models

_OUTAGE_WORDS = {"502", "down", "error", "fails", "failing", "outage", "broken"}


def _triage_script(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    text = unwrap(messages[-1].content)
    urgent = bool(_words(text) & _OUTAGE_WORDS)
    return json.dumps(
        {
            "category": "incident" if urgent else "question",
            "priority": "high" if urgent else "normal",
            "title": text[:80].strip(),
            "research_query": text,
        }
    )


def _research_script(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    found = json.loads(messages[-1].content)["articles"]
    if not found:
        return "No known cause in the knowledge base; needs a human."
    best = found[0]
    return f"Likely cause ({best['id']}): {best['text']}"


TRIAGE_MODEL = ScriptedModel("scripted-triage", _triage_script)
RESEARCH_MODEL = ScriptedModel("scripted-research", _research_script)


# ---------------------------------------------------------------- agents


class SupportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1)
    message: str = Field(min_length=1)


class TriagePlan(BaseModel):
    """What the triage model answers."""

    category: str
    priority: Literal["low", "normal", "high"]
    title: str
    research_query: str


class Article(BaseModel):
    id: str
    title: str
    text: str


class LookupResult(BaseModel):
    articles: list[Article]


class Research(BaseModel):
    summary: str
    sources: list[str]


class TicketRef(BaseModel):
    ticket_id: str


TRIAGE_BUDGET = BudgetPolicy(
    per_task=BudgetLimits(steps=10, tool_calls=5, cost_usd=Decimal("0.01")),
    per_user_day=BudgetLimits(cost_usd=Decimal("1.00")),
)
"""Hard caps: a run that loops stops at 10 steps, and nobody spends more than $1 a day."""


@app.agent(
    model=TRIAGE_MODEL,
    tools=("create_ticket",),
    delegates=("research",),
    budget=TRIAGE_BUDGET,
)
async def triage(ctx: AgentContext, task: TaskRequest) -> dict[str, object]:
    """Classify a customer message, research it, and open a ticket."""
    request = SupportRequest.model_validate(task.input)
    reply = await ctx.llm(
        [
            ChatMessage(
                role="system", content=f"Classify the message. Answer in JSON. {DATA_RULE}"
            ),
            # The customer wrote this: it goes in as marked data, never as instructions.
            ctx.untrusted_message(request.message, source="customer", document_id=task.task_id),
        ]
    )
    plan = TriagePlan.model_validate_json(reply.content or "{}")
    research = Research.model_validate(
        await ctx.delegate("research", {"question": plan.research_query})
    )
    ticket = TicketRef.model_validate(
        await ctx.tool(
            "create_ticket",
            CreateTicketArgs(
                customer=request.customer,
                title=plan.title,
                priority=plan.priority,
                summary=research.summary,
            ),
        )
    )
    return {
        "ticket_id": ticket.ticket_id,
        "category": plan.category,
        "priority": plan.priority,
        "summary": research.summary,
    }


@app.agent(model=RESEARCH_MODEL, tools=("lookup",))
async def research(ctx: AgentContext, task: TaskRequest) -> Research:
    """Find what the knowledge base knows about a question and summarise it."""
    question = str(task.input["question"])
    found = LookupResult.model_validate(await ctx.tool("lookup", LookupArgs(query=question)))
    reply = await ctx.llm(
        [
            ChatMessage(role="system", content="Summarise the articles in one line."),
            ChatMessage(role="user", content=question),
            ChatMessage(role="tool", content=found.model_dump_json(), tool_call_id="lookup"),
        ]
    )
    return Research(summary=reply.content or "", sources=[a.id for a in found.articles])
