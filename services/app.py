"""`Ballast`: declare agents and tools with decorators.

::

    app = Ballast("support")

    @app.tool(pool=PoolConfig(size=4, timeout_s=5))
    async def lookup(ctx: ToolContext, args: LookupArgs) -> dict: ...

    @app.agent(model=my_model)
    async def triage(ctx: AgentContext, task: TaskRequest) -> dict: ...

``ballast up`` runs every service of an app in one process; ``ballast run
module:lookup`` runs one of them alone, as it is deployed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bulkheads import LoopGuardPolicy, PoolConfig, RetryPolicy
from contracts.trust import Sensitivity
from services.authorization import AfterUntrusted
from services.budgets import BudgetPolicy
from services.errors import ConfigurationError
from services.llm import ChatModel
from services.policies import ArgPolicy
from services.specs import AgentFn, AgentSpec, ServiceSpec, ToolFn, ToolSpec


class Ballast:
    """A named collection of agents and tools."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.agents: dict[str, AgentSpec] = {}
        self.tools: dict[str, ToolSpec] = {}

    @property
    def specs(self) -> list[ServiceSpec]:
        """Every service of the app: agents first, then tools."""
        return [*self.agents.values(), *self.tools.values()]

    def tool(
        self,
        name: str | None = None,
        *,
        pool: PoolConfig | None = None,
        retry: RetryPolicy | None = None,
        scopes: tuple[str, ...] | None = None,
        sensitivity: Sensitivity | None = None,
        policies: tuple[ArgPolicy, ...] | None = None,
        after_untrusted: AfterUntrusted | None = None,
        always_approve: bool | None = None,
        trusted_output: bool | None = None,
        events: tuple[str, ...] | None = None,
        description: str | None = None,
    ) -> Callable[[ToolFn], ToolSpec]:
        """Declare a tool; the function takes ``(ctx, args)`` and returns JSON data or a model."""
        options = _given(
            scopes=scopes,
            sensitivity=sensitivity,
            policies=policies,
            after_untrusted=after_untrusted,
            always_approve=always_approve,
            trusted_output=trusted_output,
            events=events,
        )

        def register(fn: ToolFn) -> ToolSpec:
            spec = ToolSpec.of(
                fn, name=name, **_limits(pool, retry), **options, description=description
            )
            self._add(self.tools, spec.name, spec)
            return spec

        return register

    def agent(
        self,
        name: str | None = None,
        *,
        model: ChatModel | None = None,
        pool: PoolConfig | None = None,
        retry: RetryPolicy | None = None,
        tools: tuple[str, ...] | None = None,
        delegates: tuple[str, ...] | None = None,
        budget: BudgetPolicy | None = None,
        loop_guard: LoopGuardPolicy | None = None,
        max_tokens: int | None = None,
        description: str | None = None,
    ) -> Callable[[AgentFn], AgentSpec]:
        """Declare an agent; the function takes ``(ctx, task)`` and returns JSON data or a model.

        ``tools`` and ``delegates`` list what it may call; anything else is refused.
        """
        options = _given(
            tools=tools,
            delegates=delegates,
            budget=budget,
            loop_guard=loop_guard,
            max_tokens=max_tokens,
        )

        def register(fn: AgentFn) -> AgentSpec:
            spec = AgentSpec.of(
                fn, name=name, model=model, **_limits(pool, retry), **options,
                description=description,
            )  # fmt: skip
            self._add(self.agents, spec.name, spec)
            return spec

        return register

    def _add(self, table: dict[str, Any], name: str, spec: ServiceSpec) -> None:
        if name in table:
            raise ConfigurationError(f"{self.name} declares {spec.service} twice")
        table[name] = spec


def _limits(pool: PoolConfig | None, retry: RetryPolicy | None) -> dict[str, Any]:
    return _given(pool=pool, retry=retry)


def _given(**options: Any) -> dict[str, Any]:
    """The options that were set (the others keep the spec's defaults)."""
    return {key: value for key, value in options.items() if value is not None}
