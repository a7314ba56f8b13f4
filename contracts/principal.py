"""Who a task runs for. Travels with every task and every tool call, signed.

The signed form is the ``ballast-principal`` header: the principal's JSON and an
Ed25519 signature by the party that admitted the task (see `services.identity`).
The copy in the message body must match it.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from contracts.wire import UtcDateTime, WireModel


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
    session_id: str | None = Field(default=None, max_length=200)
    expires_at: UtcDateTime | None = Field(
        default=None, description="Tool hosts refuse the principal after this instant."
    )

    @field_validator("scopes")
    @classmethod
    def _sorted_unique(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        # A canonical order makes two equal principals serialise identically.
        return tuple(sorted(set(scopes)))

    def holds(self, scopes: tuple[str, ...]) -> bool:
        """Whether this principal holds every one of ``scopes``."""
        return set(scopes) <= set(self.scopes)
