"""The tool of the trace-context test, run with ``ballast run`` in a process where no
tracer provider is installed (tracing off, as services run by default)."""

from __future__ import annotations

from pydantic import BaseModel

from services.app import Ballast
from services.tools import ToolContext

app = Ballast("traceless")


class Text(BaseModel):
    text: str


@app.tool()
async def shout(ctx: ToolContext, args: Text) -> str:
    return args.text.upper()
