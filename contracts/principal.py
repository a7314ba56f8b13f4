"""Who a task runs for. Travels with every task and every tool call."""

from __future__ import annotations

from pydantic import Field, field_validator

from contracts.wire import WireModel


class Principal(WireModel):
    """The user (and tenant) on whose behalf an agent acts, and the scopes they hold.

    An agent never has more rights than its principal: tool hosts check the
    scopes of the principal on every call.
    """

    user_id: str = Field(min_length=1, max_length=200, examples=["user-42"])
    tenant: str = Field(min_length=1, max_length=200, examples=["acme"])
    scopes: tuple[str, ...] = Field(
        default=(),
        description="Rights granted to this principal, such as 'tickets:write'.",
        examples=[["tickets:read", "tickets:write"]],
    )

    @field_validator("scopes")
    @classmethod
    def _sorted_unique(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        # A canonical order makes two equal principals serialise identically.
        return tuple(sorted(set(scopes)))
