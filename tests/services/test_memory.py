"""Scoped memory and session conversations: owned by the run's principal, expiring,
invalidated, journaled (a replay sees what the run saw)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from pydantic import JsonValue

from contracts import ErrorCode, Principal, TaskRequest, TaskResult, TaskStatus
from contracts.wire import utc_now
from outbox import Database, UnitOfWork
from outbox import memory as store
from outbox.journal import load_journal
from outbox.sessions import SessionLifetime
from services.agent_context import AgentContext
from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.llm import ChatMessage
from services.memory import ScopeName
from services.replay import replay_run
from services.specs import AgentSpec
from tests.helpers import PRINCIPAL, eventually, unique
from tests.services.conftest import Hosts

BOB = Principal(user_id="bob", tenant="acme")
GLOBEX = Principal(user_id="tester", tenant="globex")


async def act(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    """Does what the task says to the run's memory or its session's conversation."""
    args: dict[str, Any] = task.input
    scope = cast(ScopeName, args.get("scope", "session"))
    match args["op"]:
        case "put":
            entry = await ctx.memory.put(
                args["key"], args["value"], scope=scope,
                tags=args.get("tags", ()), ttl_s=args.get("ttl_s"),
            )  # fmt: skip
            return entry.version
        case "get":
            found = await ctx.memory.get(args["key"], scope=scope)
            return None if found is None else found.value
        case "list":
            entries = await ctx.memory.list(scope=scope, tag=args.get("tag"))
            return list[JsonValue](sorted(e.key for e in entries))
        case "history":
            return list[JsonValue](m.content for m in await ctx.conversation.history())
        case "say":
            before = await ctx.conversation.history()
            await ctx.conversation.append(ChatMessage(role="user", content=args["text"]))
            return list[JsonValue](m.content for m in before)
        case _:
            return await ctx.conversation.close()


@dataclass
class Agent:
    """A running memory agent and a client to give it tasks."""

    spec: AgentSpec
    client: BallastClient
    db: Database

    async def result(
        self, principal: Principal = PRINCIPAL, session: str | None = "s1", **input: Any
    ) -> TaskResult:
        task = TaskRequest(
            agent=self.spec.name, principal=principal, session_id=session, input=input
        )
        return await self.client.run(task, timeout_s=20)

    async def __call__(
        self, principal: Principal = PRINCIPAL, session: str | None = "s1", **input: Any
    ) -> JsonValue:
        result = await self.result(principal, session, **input)
        assert result.status is TaskStatus.COMPLETED, result.error
        return result.output


async def start(
    hosts: Hosts, server: EmbeddedNats, lifetime: SessionLifetime | None = None
) -> Agent:
    options = {"session": lifetime} if lifetime else {}
    spec = AgentSpec.of(act, name=unique("memo"), **options)
    host = await hosts.start(server, [spec])
    return Agent(spec, await hosts.client(server), host.db)


class TestMemory:
    async def test_an_entry_is_gone_once_its_time_to_live_has_passed(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        agent = await start(hosts, nats_server)
        await agent(op="put", scope="user", key="short", value="s", ttl_s=0.5)
        await agent(op="put", scope="user", key="long", value="l")
        assert await agent(op="get", scope="user", key="short") == "s"

        async def expired() -> bool:
            return await agent(op="get", scope="user", key="short") is None

        await eventually(expired, timeout_s=5, what="the short entry to expire")
        assert await agent(op="get", scope="user", key="long") == "l"
        assert await agent(op="list", scope="user") == ["long"]

    async def test_invalidating_a_tag_hides_everything_derived_from_that_document(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        agent = await start(hosts, nats_server)
        for key, tags in (
            ("a", ["doc:kb-1"]),
            ("b", ["doc:kb-1", "doc:kb-2"]),
            ("c", ["doc:kb-2"]),
        ):
            await agent(op="put", scope="tenant", key=key, value=key, tags=tags)
        assert await agent(op="list", scope="tenant", tag="doc:kb-2") == ["b", "c"]
        async with UnitOfWork(agent.db) as uow:  # as 'ballast memory invalidate --tag doc:kb-1'
            count = await store.invalidate_where(
                uow, tenant="acme", tag="doc:kb-1", reason="kb-1 changed", now=utc_now()
            )
        assert count == 2
        assert await agent(op="list", scope="tenant") == ["c"]
        assert await agent(op="get", scope="tenant", key="a") is None
        async with UnitOfWork(agent.db) as uow:
            kept = await store.find(uow, utc_now(), tenant="acme", include_dead=True)
        reasons = {r.key: r.invalidated_reason for r in kept}
        assert reasons == {"a": "kb-1 changed", "b": "kb-1 changed", "c": None}
        assert await agent(op="put", scope="tenant", key="a", value="a2") == 2, "a new version"
        assert await agent(op="get", scope="tenant", key="a") == "a2"

    async def test_each_scope_belongs_to_the_principal_the_run_is_for(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        agent = await start(hosts, nats_server)
        for scope in ("session", "user", "tenant", "agent"):
            await agent(op="put", scope=scope, key="secret", value=f"tester's {scope}")
        # The same session id for another user is another session.
        assert await agent(BOB, op="get", scope="session", key="secret") is None
        assert await agent(BOB, op="get", scope="user", key="secret") is None
        assert await agent(op="get", scope="session", session="s2", key="secret") is None
        # Tenant and agent memory are shared inside the tenant, never outside it.
        assert await agent(BOB, op="get", scope="tenant", key="secret") == "tester's tenant"
        assert await agent(BOB, op="get", scope="agent", key="secret") == "tester's agent"
        for scope in ("session", "user", "tenant", "agent"):
            assert await agent(GLOBEX, op="get", scope=scope, key="secret") is None
        refused = await agent.result(session=None, op="get", scope="session", key="secret")
        assert refused.status is TaskStatus.FAILED
        assert refused.error is not None
        assert "names no session" in refused.error.message

    async def test_a_replay_sees_what_the_run_saw_not_what_memory_holds_now(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        agent = await start(hosts, nats_server)
        await agent(op="put", scope="user", key="k", value="then")
        read = await agent.result(op="get", scope="user", key="k")
        await agent(op="put", scope="user", key="k", value="now")
        journal = await load_journal(agent.db, read.task_id)
        assert [(e.kind, e.name) for e in journal.values()][1:] == [("memory", "get user/k")]
        report = await replay_run(agent.spec, journal, read.task_id)
        assert report.matched
        assert report.output == "then"


class TestConversation:
    async def test_a_session_carries_its_conversation_to_the_next_task_of_its_user(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        agent = await start(hosts, nats_server)
        assert await agent(op="say", text="one") == []
        assert await agent(op="say", text="two") == ["one"]
        assert await agent(BOB, op="say", text="bob's") == [], "same id, another user"
        assert await agent(op="say", session="s2", text="other") == []
        assert await agent(op="say", text="three") == ["one", "two"]

    async def test_a_closed_session_is_never_loaded_again(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        agent = await start(hosts, nats_server)
        await agent(op="say", text="private")
        assert await agent(op="close") is True
        refused = await agent.result(op="say", text="again")
        assert refused.status is TaskStatus.FAILED
        assert refused.error is not None
        assert refused.error.code is ErrorCode.SESSION_CLOSED
        journal = await load_journal(agent.db, refused.task_id)
        assert [(e.kind, e.name, e.status) for e in journal.values()][1] == (
            "session", "history", "failed",
        )  # fmt: skip
        assert "private" not in str([e.outcome for e in journal.values()])

    async def test_an_idle_session_expires_and_stays_closed(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        lifetime = SessionLifetime(idle_timeout=timedelta(seconds=0.5), max_age=timedelta(days=1))
        agent = await start(hosts, nats_server, lifetime)
        await agent(op="say", text="hello")
        assert await agent(op="say", text="still here") == ["hello"]

        async def ended() -> bool:  # reading the history does not keep the session alive
            return (await agent.result(op="history")).status is TaskStatus.FAILED

        await eventually(ended, timeout_s=5, what="the idle session to expire")
        refused = await agent.result(op="say", text="late")
        assert refused.error is not None
        assert refused.error.code is ErrorCode.SESSION_CLOSED
        assert "idle" in refused.error.message
        assert await agent(op="close") is False, "closed when found expired"
