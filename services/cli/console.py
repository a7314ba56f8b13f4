"""The terminal the commands print their tables and reports to, through rich.

A module of its own so that ``ballast run``, which prints nothing but logs, does not
load rich (see `services.cli.left_out`).
"""

from __future__ import annotations

from rich.console import Console

console = Console()
