"""Subject names and the committed JSON Schema files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import InvalidNameError
from contracts.schema_export import SCHEMA_DIR, WIRE_MODELS, render_schemas, stale_schemas
from contracts.subjects import (
    STREAM_SUBJECTS,
    Stream,
    dlq_subject,
    event_subject,
    result_subject,
    task_subject,
    tool_service,
    tool_subject,
)


class TestSubjects:
    def test_subjects_follow_the_documented_contract(self) -> None:
        assert task_subject("triage") == "ballast.task.triage"
        assert tool_subject("create_ticket") == "ballast.tool.create_ticket"
        assert result_subject("triage", "abc-1") == "ballast.result.triage.abc-1"
        assert event_subject("task", "completed") == "ballast.event.task.completed"
        assert dlq_subject(tool_service("lookup")) == "ballast.dlq.tool-lookup"

    def test_every_stream_captures_its_subjects(self) -> None:
        assert set(STREAM_SUBJECTS) == set(Stream)
        assert STREAM_SUBJECTS[Stream.RESULTS] == "ballast.result.>"

    @pytest.mark.parametrize("bad", ["", "Upper", "has.dot", "sp ace", "star*", "x" * 65])
    def test_names_that_break_subjects_are_refused_with_a_reason(self, bad: str) -> None:
        with pytest.raises(InvalidNameError, match="token of a NATS subject"):
            tool_subject(bad)

    def test_dlq_subject_needs_a_service_name(self) -> None:
        with pytest.raises(InvalidNameError):
            dlq_subject("lookup")


class TestSchemaFiles:
    def test_committed_schema_files_are_current(self) -> None:
        """contracts/schemas/ must match the models: run 'ballast schema export' after a change."""
        assert stale_schemas() == []

    def test_every_wire_model_has_a_schema_that_forbids_extra_fields(self) -> None:
        files = sorted(p.name for p in Path(SCHEMA_DIR).glob("*.json"))
        assert files == sorted(f"{m.__name__}.json" for m in WIRE_MODELS)
        schema = json.loads(render_schemas()["TaskRequest.json"])
        assert schema["additionalProperties"] is False
        assert "principal" in schema["required"]

    def test_a_changed_file_is_reported_stale(self, tmp_path: Path) -> None:
        for name, text in render_schemas().items():
            (tmp_path / name).write_text(text)
        (tmp_path / "ToolCall.json").write_text("{}")
        assert stale_schemas(tmp_path) == ["ToolCall.json"]
