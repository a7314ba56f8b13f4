"""Per-service NATS users from 'ballast nats-config', on a real nats-server using them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from contracts import TaskRequest, TaskStatus
from outbox import sqlite_url
from services.broker import NatsCredentials
from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.examples.support import app
from services.host import ServiceHost
from services.nats_config import User, render_config, users_for
from tests.helpers import PRINCIPAL, TEST_KEY, eventually, settings_for

Users = dict[str, User]


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Users]]:
    users = {u.name: u for u in users_for(app.specs)}
    config = tmp_path / "nats.conf"
    config.write_text(render_config(list(users.values())))
    async with EmbeddedNats(tmp_path / "nats", extra_args=("--config", str(config))) as server:
        yield server, users


async def connect_as(server: EmbeddedNats, user: User, errors: list[str]) -> Client:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        server.url,
        error_cb=on_error,
        allow_reconnect=False,
        **NatsCredentials(user.key.seed, user.inbox).connect_options(),
    )


class TestServicesUnderTheirOwnUsers:
    async def test_the_demo_runs_with_each_service_as_its_own_user(
        self, secured: tuple[EmbeddedNats, Users], tmp_path: Path
    ) -> None:
        server, users = secured
        async with AsyncExitStack() as stack:
            for spec in app.specs:
                user = users[spec.service]
                settings = settings_for(
                    server.url,
                    sqlite_url(tmp_path / f"{spec.service}.db"),
                    tmp_path,
                    nats_nkey_seed=user.key.seed,
                    nats_inbox_prefix=user.inbox,
                    auto_migrate=True,
                )
                await stack.enter_async_context(ServiceHost(settings, [spec], name=spec.service))
            client_user = users["client"]
            client = await stack.enter_async_context(
                BallastClient(
                    server.url,
                    signer=TEST_KEY,
                    credentials=NatsCredentials(client_user.key.seed, client_user.inbox),
                )
            )
            task = TaskRequest(
                agent="triage",
                input={"customer": "acme", "message": "checkout error 502"},
                principal=PRINCIPAL,
            )
            result = await client.run(task, timeout_s=30)
        assert result.status is TaskStatus.COMPLETED, result.error


class TestForbidden:
    @pytest.mark.parametrize(
        ("user", "action", "subject"),
        [
            ("tool-lookup", "publish", "ballast.task.triage"),
            ("tool-lookup", "publish", "ballast.tool.create_ticket"),
            ("tool-lookup", "publish", "ballast.event.task.completed"),
            ("tool-lookup", "subscribe", "ballast.tool.create_ticket"),
            ("tool-lookup", "subscribe", "_INBOX_tool_create_ticket.>"),
            (
                "tool-lookup",
                "publish",
                "$JS.API.CONSUMER.MSG.NEXT.BALLAST_TOOLS.tool-create_ticket",
            ),
            ("tool-lookup", "publish", "$JS.API.STREAM.PURGE.BALLAST_TOOLS"),
            ("agent-research", "publish", "ballast.tool.create_ticket"),
            ("agent-research", "publish", "ballast.task.triage"),
            ("agent-research", "publish", "$KV.ballast_agents.triage"),
            ("agent-research", "subscribe", "ballast.result.triage.>"),
            ("client", "publish", "ballast.tool.create_ticket"),
            ("client", "subscribe", "ballast.task.>"),
        ],
    )
    async def test_a_forbidden_publish_or_subscribe_fails(
        self, secured: tuple[EmbeddedNats, Users], user: str, action: str, subject: str
    ) -> None:
        server, users = secured
        errors: list[str] = []
        nc = await connect_as(server, users[user], errors)
        try:
            if action == "publish":
                await nc.publish(subject, b"{}")
            else:
                await nc.subscribe(subject)
            await nc.flush()
            await eventually(_any(errors), timeout_s=5, what="a permissions violation")
        finally:
            await nc.close()
        said = " ".join(errors).lower()  # nats-py lower-cases the server's error
        assert "permissions violation" in said
        assert subject.lower() in said

    async def test_allowed_actions_raise_nothing(self, secured: tuple[EmbeddedNats, Users]) -> None:
        server, users = secured
        errors: list[str] = []
        nc = await connect_as(server, users["tool-lookup"], errors)
        try:
            await nc.subscribe(f"{users['tool-lookup'].inbox}.x")
            await nc.publish("ballast.result.triage.t1", b"{}")
            await nc.flush()
            await asyncio.sleep(0.2)  # give the server time to object, if it would
        finally:
            await nc.close()
        assert errors == []


def _any(errors: list[str]):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(errors)

    return check
