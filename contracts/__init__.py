"""The wire contract of Ballast: message models, subject names, error codes, JSON Schema.

This package imports nothing else of Ballast, so any service (or a client that
only publishes tasks) can depend on it alone.
"""

from contracts.approval import ApprovalGrant, ApprovalRequest, ApprovalStatus
from contracts.audit import AuthDecision, Verdict
from contracts.breaker import BreakerChanged, BreakerState
from contracts.budget import BudgetExceeded, BudgetLimits, BudgetMetric, BudgetScope
from contracts.dead_letter import DeadLetter
from contracts.errors import ContractError, ErrorCode, ErrorInfo, InvalidNameError
from contracts.ids import new_id
from contracts.principal import Principal
from contracts.subjects import STREAM_SUBJECTS, Header, Stream
from contracts.tasks import Compensation, ParentRef, TaskRequest, TaskResult, TaskStatus
from contracts.tools import ToolCall, ToolResult, ToolStatus
from contracts.trust import SENSITIVE, Provenance, Sensitivity
from contracts.wire import SCHEMA_VERSION, WireModel, utc_now

__all__ = [
    "SCHEMA_VERSION",
    "SENSITIVE",
    "STREAM_SUBJECTS",
    "ApprovalGrant",
    "ApprovalRequest",
    "ApprovalStatus",
    "AuthDecision",
    "BreakerChanged",
    "BreakerState",
    "BudgetExceeded",
    "BudgetLimits",
    "BudgetMetric",
    "BudgetScope",
    "Compensation",
    "ContractError",
    "DeadLetter",
    "ErrorCode",
    "ErrorInfo",
    "Header",
    "InvalidNameError",
    "ParentRef",
    "Principal",
    "Provenance",
    "Sensitivity",
    "Stream",
    "TaskRequest",
    "TaskResult",
    "TaskStatus",
    "ToolCall",
    "ToolResult",
    "ToolStatus",
    "Verdict",
    "WireModel",
    "new_id",
    "utc_now",
]
