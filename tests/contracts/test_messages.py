"""The wire models: strict, versioned, UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from contracts import (
    ErrorCode,
    ErrorInfo,
    Principal,
    TaskRequest,
    TaskResult,
    TaskStatus,
    ToolResult,
    ToolStatus,
)
from contracts.dead_letter import DeadLetter

PRINCIPAL = Principal(user_id="u1", tenant="acme", scopes=("b", "a", "b"))


class TestStrictness:
    def test_unknown_fields_are_rejected(self) -> None:
        """A typo in a client's payload fails instead of being ignored."""
        with pytest.raises(ValidationError, match="extra"):
            TaskRequest.model_validate(
                {"agent": "triage", "principal": PRINCIPAL.model_dump(), "inputs": {}}
            )

    def test_names_and_ids_must_be_subject_tokens(self) -> None:
        """Agent names and task ids end up in subjects: dots and spaces are refused."""
        with pytest.raises(ValidationError):
            TaskRequest(agent="Triage.Agent", principal=PRINCIPAL)
        with pytest.raises(ValidationError):
            TaskRequest(agent="triage", task_id="a.b", principal=PRINCIPAL)

    def test_an_unknown_schema_version_is_rejected(self) -> None:
        with pytest.raises(ValidationError, match="schema_version"):
            TaskRequest.model_validate(
                {"schema_version": 2, "agent": "triage", "principal": PRINCIPAL.model_dump()}
            )


class TestTimes:
    def test_times_are_normalised_to_utc(self) -> None:
        local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        task = TaskRequest(agent="triage", principal=PRINCIPAL, deadline=local)
        assert task.deadline is not None
        assert task.deadline.utcoffset() == timedelta(0)
        assert task.deadline.hour == 10

    def test_naive_times_are_rejected(self) -> None:
        with pytest.raises(ValidationError, match="timezone"):
            TaskRequest(agent="triage", principal=PRINCIPAL, deadline=datetime(2026, 1, 1))


class TestConsistency:
    def test_a_failed_result_needs_an_error_and_a_completed_one_has_none(self) -> None:
        now = datetime.now(UTC_)
        error = ErrorInfo(code=ErrorCode.TIMEOUT, message="slow", retryable=True)
        with pytest.raises(ValidationError):
            TaskResult(task_id="t", agent="a", status=TaskStatus.FAILED, started_at=now)
        with pytest.raises(ValidationError):
            ToolResult(
                call_id="t:1", tool="x", task_id="t", agent="a", status=ToolStatus.OK,
                error=error, attempts=1,
            )  # fmt: skip

    def test_principal_scopes_are_canonical(self) -> None:
        """Equal principals serialise identically, whatever order the scopes came in."""
        assert PRINCIPAL.scopes == ("a", "b")


class TestDeadLetterPayload:
    @pytest.mark.parametrize("payload", [b'{"ok": true}', b"\xff\x00binary", b""])
    def test_original_payload_round_trips_byte_for_byte(self, payload: bytes) -> None:
        text, encoding = DeadLetter.encode_payload(payload)
        letter = DeadLetter(
            service="tool-x", subject="ballast.tool.x", payload=text, payload_encoding=encoding,
            error=ErrorInfo(code=ErrorCode.INVALID_MESSAGE, message="bad", retryable=False),
            attempts=1, first_failure_at=datetime.now(UTC_), last_failure_at=datetime.now(UTC_),
        )  # fmt: skip
        again = DeadLetter.model_validate_json(letter.model_dump_json())
        assert again.original_payload() == payload


UTC_ = UTC
