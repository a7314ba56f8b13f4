"""Tool calls published the way an agent host publishes them: signed, from a declared agent."""

from __future__ import annotations

from datetime import timedelta

from nats.js import JetStreamContext
from pydantic import BaseModel

from contracts import Header, ToolCall
from contracts.subjects import tool_subject
from contracts.wire import utc_now
from services.app import Ballast
from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.identity import sign_principal
from services.registry import AgentPolicy, AgentRegistry
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, TEST_KEY, unique
from tests.services.conftest import Hosts

SIGNED_PRINCIPAL = PRINCIPAL.model_copy(update={"expires_at": utc_now() + timedelta(days=1)})


class Item(BaseModel):
    text: str


def echo_tool() -> tuple[Ballast, str]:
    """An app with one tool that answers the text of `caller_call`, and the tool's name."""
    app = Ballast("t")
    name = unique("echo")

    @app.tool(name)
    async def echo(ctx: ToolContext, args: Item) -> str:
        return args.text

    return app, name


async def serve_echo_tool(server: EmbeddedNats, hosts: Hosts) -> tuple[str, BallastClient]:
    """`echo_tool` hosted on ``server``: its name, and a client to call it with."""
    app, name = echo_tool()
    await hosts.start(server, app.specs)
    return name, await hosts.client(server)


def caller_call(tool: str, *, call_id: str, agent: str = "caller", text: str = "hi") -> ToolCall:
    """A call as an agent would publish it."""
    return ToolCall(
        call_id=call_id,
        tool=tool,
        args={"text": text},
        task_id=call_id.split(":", maxsplit=1)[0],
        agent=agent,
        principal=SIGNED_PRINCIPAL,
    )


async def allow(js: JetStreamContext, agent: str, *tools: str) -> None:
    """Declare in the registry that ``agent`` may call ``tools`` (added to what it had)."""
    registry = AgentRegistry(js)
    await registry.start()
    had = await registry.policy(agent) or AgentPolicy()
    await registry.declare(
        agent, had.model_copy(update={"tools": tuple(sorted({*had.tools, *tools}))})
    )


async def publish_call(
    js: JetStreamContext,
    call: ToolCall,
    *,
    message_id: str | None = None,
    principal_token: str | None = None,
    declare: bool = True,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish ``call`` signed with the test key (or with ``principal_token``), with
    ``headers`` added (a ``traceparent``, say)."""
    if declare:
        await allow(js, call.agent, call.tool)
    await js.publish(
        tool_subject(call.tool),
        call.model_dump_json().encode(),
        headers={
            Header.MSG_ID: message_id or call.call_id,
            Header.PRINCIPAL: principal_token or sign_principal(call.principal, TEST_KEY),
            **(headers or {}),
        },
    )
