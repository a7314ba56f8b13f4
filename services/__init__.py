"""What runs: the service host, agent and tool hosts, dead-letter tools, the CLI, examples.

Dependency rule: ``services`` imports ``bulkheads``, ``outbox`` and ``contracts``.

Names are imported when first used, so that a command such as ``ballast trace`` does
not pay for the broker and model libraries it never touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.agent_context import AgentContext
    from services.app import Ballast
    from services.budgets import BudgetPolicy
    from services.client import BallastClient
    from services.errors import (
        BallastError,
        BrokerError,
        BudgetExceededError,
        ConfigurationError,
        DeadlineExceededError,
        DelegationError,
        EmbeddedBrokerError,
        HandlerError,
        InvalidMessageError,
        ModelError,
        NonDeterminismError,
        StepFailedError,
        TaskFailedError,
        ToolCallError,
    )
    from services.host import ServiceHost
    from services.settings import Settings
    from services.tools import ToolContext

_EXPORTS = {
    "AgentContext": "services.agent_context",
    "Ballast": "services.app",
    "BallastClient": "services.client",
    "BallastError": "services.errors",
    "BrokerError": "services.errors",
    "BudgetExceededError": "services.errors",
    "BudgetPolicy": "services.budgets",
    "ConfigurationError": "services.errors",
    "DeadlineExceededError": "services.errors",
    "DelegationError": "services.errors",
    "EmbeddedBrokerError": "services.errors",
    "HandlerError": "services.errors",
    "InvalidMessageError": "services.errors",
    "ModelError": "services.errors",
    "NonDeterminismError": "services.errors",
    "ServiceHost": "services.host",
    "Settings": "services.settings",
    "StepFailedError": "services.errors",
    "TaskFailedError": "services.errors",
    "ToolCallError": "services.errors",
    "ToolContext": "services.tools",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'services' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [
    "AgentContext",
    "Ballast",
    "BallastClient",
    "BallastError",
    "BrokerError",
    "BudgetExceededError",
    "BudgetPolicy",
    "ConfigurationError",
    "DeadlineExceededError",
    "DelegationError",
    "EmbeddedBrokerError",
    "HandlerError",
    "InvalidMessageError",
    "ModelError",
    "NonDeterminismError",
    "ServiceHost",
    "Settings",
    "StepFailedError",
    "TaskFailedError",
    "ToolCallError",
    "ToolContext",
]
