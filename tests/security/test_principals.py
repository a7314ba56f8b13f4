"""A child task runs for exactly the principal of its parent, never more."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import JsonValue

from contracts import Principal, TaskRequest, TaskStatus
from services.agent_context import AgentContext
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.errors import ConfigurationError
from services.keys import resolve_keys
from services.settings import Settings
from tests.helpers import PRINCIPAL, TEST_KEY, unique
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


def test_production_refuses_to_start_without_configured_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="BALLAST_TRUSTED_KEYS"):
        resolve_keys(Settings(env="production", data_dir=tmp_path))
    assert not (tmp_path / "keys").exists(), "production never makes a local key"
    configured = resolve_keys(
        Settings(env="production", data_dir=tmp_path, trusted_keys=[TEST_KEY.public_key])
    )
    assert configured.signer is None
    assert configured.principals.public_keys == {TEST_KEY.public_key}


def test_development_makes_one_local_key_and_trusts_it(tmp_path: Path) -> None:
    first = resolve_keys(Settings(data_dir=tmp_path))
    again = resolve_keys(Settings(data_dir=tmp_path))
    assert first.signer is not None
    assert again.signer is not None
    assert first.signer.public_key == again.signer.public_key
    assert first.signer.public_key in first.principals.public_keys
    assert oct((tmp_path / "keys" / "dev.seed").stat().st_mode)[-3:] == "600"
