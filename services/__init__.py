"""What runs: the service host, agent and tool hosts, dead-letter tools, the CLI, examples.

Dependency rule: ``services`` imports ``bulkheads``, ``outbox`` and ``contracts``.
"""

from services.agents import AgentContext
from services.app import Ballast
from services.client import BallastClient
from services.errors import (
    BallastError,
    BrokerError,
    ConfigurationError,
    DeadlineExceededError,
    DelegationError,
    EmbeddedBrokerError,
    HandlerError,
    InvalidMessageError,
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
    "ConfigurationError",
    "DeadlineExceededError",
    "DelegationError",
    "EmbeddedBrokerError",
    "HandlerError",
    "InvalidMessageError",
    "ServiceHost",
    "Settings",
    "TaskFailedError",
    "ToolCallError",
    "ToolContext",
]
