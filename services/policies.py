"""Declarative argument policies, checked by the tool host before a call runs.

They are data, not code in the agent: the tool declares them, and no model
output can switch them off. Each names the argument it looks at; a list
argument is checked element by element.

::

    @app.tool(sensitivity=Sensitivity.EGRESS, policies=(
        EmailDomain(field="to", domains_by_tenant={"acme": ("acme.com",)}),
    ))
    @app.tool(sensitivity=Sensitivity.PAYMENT, policies=(MaxValue(field="amount", limit=100),))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from contracts.principal import Principal


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str

    def values(self, args: dict[str, Any]) -> Iterator[Any]:
        value = args.get(self.field)
        if isinstance(value, list):
            yield from value
        elif value is not None:
            yield value


class MaxValue(_Policy):
    """A number argument may not exceed ``limit``."""

    kind: Literal["max"] = "max"
    limit: float

    def violation(self, args: dict[str, Any], principal: Principal) -> str | None:
        for value in self.values(args):
            if not isinstance(value, int | float) or value > self.limit:
                return f"{self.field}={value!r} exceeds the limit of {self.limit:g}"
        return None


class AllowedValues(_Policy):
    """An argument must be one of ``values``."""

    kind: Literal["one_of"] = "one_of"
    allowed: tuple[JsonValue, ...]

    def violation(self, args: dict[str, Any], principal: Principal) -> str | None:
        for value in self.values(args):
            if value not in self.allowed:
                return f"{self.field}={value!r} is not one of the allowed values"
        return None


class EmailDomain(_Policy):
    """Every address in an argument must be in a domain of the principal's tenant."""

    kind: Literal["email_domain"] = "email_domain"
    domains_by_tenant: dict[str, tuple[str, ...]]

    def violation(self, args: dict[str, Any], principal: Principal) -> str | None:
        allowed = {d.lower() for d in self.domains_by_tenant.get(principal.tenant, ())}
        for value in self.values(args):
            domain = str(value).rpartition("@")[2].lower()
            if "@" not in str(value) or domain not in allowed:
                return f"{self.field}={value!r} is outside tenant {principal.tenant}'s domains"
        return None


class Matches(_Policy):
    """A string argument must match ``pattern`` entirely."""

    kind: Literal["matches"] = "matches"
    pattern: str

    def violation(self, args: dict[str, Any], principal: Principal) -> str | None:
        for value in self.values(args):
            if not isinstance(value, str) or re.fullmatch(self.pattern, value) is None:
                return f"{self.field}={value!r} does not match {self.pattern}"
        return None


ArgPolicy = Annotated[MaxValue | AllowedValues | EmailDomain | Matches, Field(discriminator="kind")]
