"""Building blocks shared by every message on the wire.

Every model is strict about its input (``extra="forbid"``) so that a typo in a
client written in another language fails loudly instead of being ignored, and
carries ``schema_version`` so that consumers can tell old payloads from new ones.
Times are always timezone-aware and normalised to UTC; ids are plain strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION: Final = 1
"""Version of the wire contract. Bumped on any change a consumer must know about."""

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""Agent and tool names: one NATS subject token, lower case, so subjects stay predictable."""

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""Task ids appear as a subject token (``ballast.result.<agent>.<task_id>``): no dots or spaces."""

MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_:.-]{1,200}$"
"""Ids used as ``Nats-Msg-Id``, such as step keys ``<task_id>:<seq>``."""


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A datetime that must carry a timezone; stored and sent as UTC."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, examples=["triage", "create_ticket"])]
TaskId = Annotated[
    str, Field(pattern=TASK_ID_PATTERN, examples=["3f2b9c4e0d5a4c3e9b1a7f6e5d4c3b2a"])
]
MessageId = Annotated[str, Field(pattern=MESSAGE_ID_PATTERN, examples=["3f2b9c4e:2"])]


class WireModel(BaseModel):
    """Base of every message: strict input, immutable, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION,
        description="Version of the wire contract this message follows.",
    )
