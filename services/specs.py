"""Declarations of agents and tools: what a service runs and with which limits.

A spec is plain data plus the user's function. The same spec runs inside
``ballast up`` (every service in one process) or alone with
``ballast run module:spec`` (one service per process, as deployed).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, JsonValue, TypeAdapter

from bulkheads import LoopGuardPolicy, PoolConfig, RetryPolicy
from contracts.subjects import agent_service, check_name, tool_service
from contracts.trust import Sensitivity
from outbox.sessions import SessionLifetime
from services.authorization import AfterUntrusted, default_after_untrusted
from services.budgets import BudgetPolicy
from services.context_window import ContextPolicy
from services.errors import ConfigurationError
from services.policies import ArgPolicy

if TYPE_CHECKING:
    from contracts.tasks import TaskRequest
    from services.agent_context import AgentContext
    from services.llm import ChatModel
    from services.retrieval import Retriever
    from services.tools import ToolContext

ToolFn = Callable[["ToolContext", Any], Awaitable[Any]]
AgentFn = Callable[["AgentContext", "TaskRequest"], Awaitable[Any]]

_JSON = TypeAdapter(JsonValue)


DEFAULT_SESSION_LIFETIME = SessionLifetime(
    idle_timeout=timedelta(hours=24), max_age=timedelta(days=30)
)
"""A conversation ends after a day without turns, or a month after it began."""


def to_json_value(value: Any) -> JsonValue:
    """A handler's return value as JSON data; models are dumped, anything else must be JSON."""
    if isinstance(value, BaseModel):
        return _JSON.validate_python(value.model_dump(mode="json"))
    return _JSON.validate_python(value)


def _args_model(fn: ToolFn) -> type[BaseModel] | None:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise ConfigurationError(
            f"tool function {fn.__qualname__} must take (ctx, args), got {len(params)} parameters"
        )
    hint = typing.get_type_hints(fn).get(params[1].name)
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


@dataclass(frozen=True)
class ToolSpec:
    """A tool: a function called with validated arguments, in its own pool, behind its rules."""

    name: str
    fn: ToolFn
    pool: PoolConfig = field(default_factory=PoolConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    description: str = ""
    args_model: type[BaseModel] | None = None
    scopes: tuple[str, ...] = ()
    """Scopes the principal must hold."""
    sensitivity: Sensitivity = Sensitivity.WRITE
    """What the tool can do; egress, payment and destructive tools are guarded after
    untrusted content."""
    policies: tuple[ArgPolicy, ...] = ()
    """Declarative argument rules, checked before every call."""
    after_untrusted: AfterUntrusted | None = None
    """The rule for a sensitive tool after untrusted content (default: approve)."""
    always_approve: bool = False
    """Every call needs a human's approval."""
    trusted_output: bool = True
    """Whether the tool's output may be treated as trusted (false for web, tickets, mail)."""
    events: tuple[str, ...] = ()
    """Event subjects (after ``ballast.event.``) the tool may publish, e.g. 'ticket.created'."""

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.after_untrusted is None:
            object.__setattr__(self, "after_untrusted", default_after_untrusted(self.sensitivity))

    @classmethod
    def of(cls, fn: ToolFn, *, name: str | None = None, **options: Any) -> ToolSpec:
        """A spec for ``fn``, its argument model read from its annotation."""
        return cls(
            name=name or fn.__name__,
            fn=fn,
            description=options.pop("description", None) or inspect.getdoc(fn) or "",
            args_model=_args_model(fn),
            **options,
        )

    @property
    def service(self) -> str:
        return tool_service(self.name)


@dataclass(frozen=True)
class AgentSpec:
    """An agent: ``async def run(ctx, task)`` in its own pool, with its model."""

    name: str
    fn: AgentFn
    pool: PoolConfig = field(default_factory=lambda: PoolConfig(size=8, timeout_s=300.0))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    description: str = ""
    model: ChatModel | None = None
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    loop_guard: LoopGuardPolicy = field(default_factory=LoopGuardPolicy)
    max_tokens: int = 1024
    """Output tokens a model call may use (and reserves) unless the call says otherwise."""
    tools: tuple[str, ...] = ()
    """The tools this agent may call; any other is refused (deny by default)."""
    delegates: tuple[str, ...] = ()
    """The agents this agent may hand child tasks to."""
    max_context_bytes: int = 200_000
    """A model call with a larger conversation is refused (``too_large``)."""
    context: ContextPolicy = field(default_factory=ContextPolicy)
    """The token bound of a model call's conversation, and what gives way when it is over."""
    retriever: Retriever | None = None
    """Where ``ctx.retrieve`` searches (default: full-text over the service's database)."""
    session: SessionLifetime = field(default_factory=lambda: DEFAULT_SESSION_LIFETIME)
    """How long a session lives for this agent (``ctx.conversation``)."""

    def __post_init__(self) -> None:
        check_name(self.name)

    @classmethod
    def of(cls, fn: AgentFn, *, name: str | None = None, **options: Any) -> AgentSpec:
        return cls(
            name=name or fn.__name__,
            fn=fn,
            description=options.pop("description", None) or inspect.getdoc(fn) or "",
            **options,
        )

    @property
    def service(self) -> str:
        return agent_service(self.name)


ServiceSpec = AgentSpec | ToolSpec
