"""Untrusted content: where content came from, and whether it may carry instructions.

Anything an attacker can write (a web page, a ticket body, a retrieved document,
a file name, a tool's output) is *untrusted*. Once untrusted content entered a
run, sensitive tools (egress, payment, destructive) need a human's approval or
are refused, whatever the model asks for.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from contracts.wire import UtcDateTime, WireModel


class Sensitivity(StrEnum):
    """What a tool can do to the world, for policies to decide on."""

    READ = "read"
    WRITE = "write"
    EGRESS = "egress"
    """Sends data out of the tenant: email, webhooks, uploads."""
    PAYMENT = "payment"
    DESTRUCTIVE = "destructive"
    """Deletes or overwrites what cannot be restored."""


SENSITIVE = frozenset({Sensitivity.EGRESS, Sensitivity.PAYMENT, Sensitivity.DESTRUCTIVE})
"""Sensitivities that untrusted content must not trigger on its own."""


class Provenance(WireModel):
    """Where a piece of content came from."""

    source: str = Field(description="The tool, feed or store, e.g. 'web' or 'tickets'.")
    document_id: str | None = None
    chunk: str | None = None
    trusted: bool = Field(description="False for anything an outsider could have written.")
    fetched_at: UtcDateTime | None = None
