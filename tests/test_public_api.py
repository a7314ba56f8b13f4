"""Each package exports exactly its intended public names, and imports only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bulkheads
import contracts
import outbox
import services

ROOT = Path(__file__).resolve().parents[1]


class TestExports:
    @pytest.mark.parametrize(
        ("package", "names"),
        [
            (
                bulkheads,
                {
                    "Admission", "BreakerPolicy", "BulkheadError", "CircuitBreaker",
                    "CircuitOpenError", "HandlerTimeoutError", "LoopDetectedError", "LoopGuard",
                    "LoopGuardPolicy", "PoolConfig", "RetryPolicy", "Shared", "WorkerPool",
                },
            ),
            (
                outbox,
                {
                    "AlreadyProcessedError", "Database", "DatabaseError", "DeliveryFailure",
                    "InboxEntry", "JournalEntry", "JetStreamPublisher", "Outgoing", "OutboxError",
                    "OutboxMessage", "PublishError", "Published", "Relay", "RelayConfig",
                    "UnitOfWork", "record_failure", "sqlite_url",
                },
            ),
            (
                contracts,
                {
                    "SCHEMA_VERSION", "SENSITIVE", "STREAM_SUBJECTS", "ApprovalGrant",
                    "ApprovalRequest", "ApprovalStatus", "AuthDecision", "Provenance",
                    "Sensitivity", "Verdict", "BreakerChanged", "BreakerState",
                    "BudgetExceeded", "BudgetLimits", "BudgetMetric", "BudgetScope",
                    "Compensation", "ContractError", "DeadLetter",
                    "ErrorCode", "ErrorInfo", "Header", "InvalidNameError", "ParentRef",
                    "Principal", "Stream", "TaskRequest", "TaskResult", "TaskStatus",
                    "ToolCall", "ToolResult", "ToolStatus", "WireModel", "new_id", "utc_now",
                },
            ),
            (
                services,
                {
                    "AgentContext", "Ballast", "BallastClient", "BallastError", "BrokerError",
                    "BudgetExceededError", "BudgetPolicy", "ConfigurationError",
                    "DeadlineExceededError", "DelegationError", "EmbeddedBrokerError",
                    "HandlerError", "InvalidMessageError", "ModelError", "NonDeterminismError",
                    "ServiceHost", "Settings", "StepFailedError", "TaskFailedError",
                    "ToolCallError", "ToolContext",
                },
            ),
        ],
    )  # fmt: skip
    def test_all_is_exactly_the_public_api(self, package: object, names: set[str]) -> None:
        exported = package.__all__  # type: ignore[attr-defined]
        assert set(exported) == names
        assert all(hasattr(package, name) for name in exported)


ALLOWED = {
    "contracts": set(),
    "outbox": {"contracts"},
    "bulkheads": {"contracts"},
    "services": {"contracts", "outbox", "bulkheads"},
}


class TestDependencyDirection:
    @pytest.mark.parametrize("package", sorted(ALLOWED))
    def test_imports_go_one_way(self, package: str) -> None:
        """services -> bulkheads, outbox -> contracts; contracts imports nothing of ours."""
        ours = set(ALLOWED)
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    top = node.module.split(".")[0]
                elif isinstance(node, ast.Import):
                    top = node.names[0].name.split(".")[0]
                else:
                    continue
                if top in ours and top != package:
                    assert top in ALLOWED[package], f"{path.relative_to(ROOT)} imports {top}"
