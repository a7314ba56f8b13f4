"""The demo of ``make run``: one task through two agents and two tools, on the local stack."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from contracts import TaskStatus
from services.demo import run_demo
from services.settings import Settings


class TestDemo:
    async def test_demo_completes_and_reports_the_flow(self, tmp_path: Path) -> None:
        """With nothing configured the demo starts its own broker, runs the task and shows each
        message, the ticket row and the result."""
        out = io.StringIO()
        result = await run_demo(Settings(data_dir=tmp_path), Console(file=out, width=200))
        assert result.status is TaskStatus.COMPLETED
        assert isinstance(result.output, dict)
        assert str(result.output["ticket_id"]).startswith("T-")
        assert result.output["priority"] == "high"
        text = out.getvalue()
        for subject in (
            "ballast.task.triage",
            "ballast.task.research",
            "ballast.tool.lookup",
            "ballast.tool.create_ticket",
            "ballast.event.ticket.created",
            "ballast.event.task.completed",
        ):
            assert subject in text
        assert f"ticket row {result.output['ticket_id']}" in text
        assert not (tmp_path / "nats.url").exists(), "the embedded broker's URL file is removed"
