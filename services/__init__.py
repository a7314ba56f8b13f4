"""What runs: the service host, agent and tool hosts, dead-letter tools, the CLI, examples.

Dependency rule: ``services`` imports ``bulkheads``, ``outbox`` and ``contracts``.
"""

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
