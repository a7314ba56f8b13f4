"""Service files: an operator's limits applied to the code's declaration, every key checked."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bulkheads import PoolConfig, RetryPolicy
from contracts import TaskRequest
from services.agent_context import AgentContext
from services.app import Ballast
from services.budgets import BudgetPolicy
from services.errors import ConfigurationError
from services.service_file import configured
from services.specs import AgentSpec, ToolSpec
from services.tools import ToolContext

app = Ballast("limits")


@app.tool(pool=PoolConfig(size=4, timeout_s=5.0), retry=RetryPolicy(max_deliveries=3))
async def fetch(ctx: ToolContext, args: dict[str, str]) -> str:
    return "ok"


@app.agent(tools=("fetch", "send"), budget=BudgetPolicy())
async def planner(ctx: AgentContext, task: TaskRequest) -> str:
    return "done"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_section_changes_only_the_keys_it_names(tmp_path: Path) -> None:
    spec = configured(fetch, _file(tmp_path, "[pool]\nsize = 16\n[retry]\nmax_delay_s = 9.5\n"))
    assert isinstance(spec, ToolSpec)
    assert spec.pool == PoolConfig(size=16, timeout_s=5.0)
    assert spec.retry == RetryPolicy(max_deliveries=3, max_delay_s=9.5)
    assert spec.fn is fetch.fn


def test_an_agent_file_sets_its_allow_list_and_budget(tmp_path: Path) -> None:
    text = 'tools = ["fetch"]\nmax_tokens = 256\n[budget.per_task]\nsteps = 20\ncost_usd = "0.5"\n'
    spec = configured(planner, _file(tmp_path, text))
    assert isinstance(spec, AgentSpec)
    assert spec.tools == ("fetch",)
    assert spec.max_tokens == 256
    assert spec.budget.per_task.steps == 20
    assert spec.budget.per_task.cost_usd == Decimal("0.5")
    assert spec.budget.per_user == planner.budget.per_user


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pool]\nsise = 3\n", "unknown key sise"),
        ("[pool]\nsize = 0\n", "at least 1"),
        ("[pool]\nsize = 'many'\n", "[pool] is not valid"),
        ("pool = 3\n", "expected a table"),
        ("[budget.per_task]\nsteps = -1\n", "[budget] is not valid"),
        ("tools = 'fetch'\n", "[tools] is not valid"),
        ("[breaker]\nthreshold = 1\n", "breaker cannot be set"),
        ("[pool\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        configured(planner, path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_agent_keys_are_refused_for_a_tool(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="tools cannot be set for tool-fetch"):
        configured(fetch, _file(tmp_path, 'tools = ["x"]\n'))


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the service file"):
        configured(fetch, tmp_path / "absent.toml")
