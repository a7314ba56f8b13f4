"""JSON Schema files of the wire models: how clients in other languages speak to Ballast."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from contracts.approval import ApprovalGrant, ApprovalRequest
from contracts.audit import AuthDecision
from contracts.breaker import BreakerChanged
from contracts.budget import BudgetExceeded
from contracts.dead_letter import DeadLetter
from contracts.principal import Principal
from contracts.tasks import TaskRequest, TaskResult
from contracts.tools import ToolCall, ToolResult

SCHEMA_DIR = Path(__file__).parent / "schemas"
"""Where the committed schema files live (``contracts/schemas``)."""

WIRE_MODELS: tuple[type[BaseModel], ...] = (
    TaskRequest,
    TaskResult,
    ToolCall,
    ToolResult,
    DeadLetter,
    Principal,
    BudgetExceeded,
    BreakerChanged,
    ApprovalRequest,
    ApprovalGrant,
    AuthDecision,
)


def render_schemas() -> dict[str, str]:
    """Each wire model's JSON Schema as text, keyed by file name."""
    rendered: dict[str, str] = {}
    for model in WIRE_MODELS:
        # Validation mode: the schema describes what a publisher may send.
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://ballast.dev/schemas/{model.__name__}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        rendered[f"{model.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        name
        for name, text in render_schemas().items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    ]
