"""A child task runs for exactly the principal of its parent, never more."""

from __future__ import annotations

from pydantic import JsonValue

from contracts import Principal, TaskRequest, TaskStatus
from services.agent_context import AgentContext
from services.app import Ballast
from services.embedded import EmbeddedNats
from tests.helpers import PRINCIPAL, unique
from tests.services.conftest import Hosts


async def test_a_child_inherits_the_signed_principal_unchanged(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    app = Ballast("t")
    parent, child = unique("parent"), unique("child")

    @app.agent(child)
    async def child_run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        # The child's host verified the forwarded signature before this ran.
        return ctx.principal.model_dump(mode="json")

    @app.agent(parent, delegates=(child,))
    async def parent_run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        return {
            "mine": ctx.principal.model_dump(mode="json"),
            "child": await ctx.delegate(child, {}),
        }

    await hosts.start(nats_server, app.specs)
    client = await hosts.client(nats_server)
    result = await client.run(TaskRequest(agent=parent, principal=PRINCIPAL), timeout_s=20)
    assert result.status is TaskStatus.COMPLETED
    assert isinstance(result.output, dict)
    mine = Principal.model_validate(result.output["mine"])
    assert Principal.model_validate(result.output["child"]) == mine
    assert mine.scopes == PRINCIPAL.scopes
