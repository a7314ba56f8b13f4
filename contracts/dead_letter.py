"""Dead letters: messages that could not be processed, kept with everything needed to redrive."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import Field

from contracts.errors import ErrorInfo
from contracts.wire import UtcDateTime, WireModel


class DeadLetter(WireModel):
    """A message that failed for good, published to ``ballast.dlq.<service>``.

    It keeps the original payload byte for byte (UTF-8 text when it decodes,
    base64 otherwise) and its headers, so ``ballast dlq redrive`` can publish it
    again unchanged.
    """

    service: str = Field(description="The consumer that gave up, such as 'tool-create_ticket'.")
    subject: str = Field(description="The subject the original message was published to.")
    stream_seq: int | None = Field(default=None, description="Its sequence in its stream.")
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    headers: dict[str, str] = Field(default_factory=dict)
    error: ErrorInfo
    attempts: int = Field(ge=1, description="How many deliveries were tried.")
    first_failure_at: UtcDateTime
    last_failure_at: UtcDateTime

    @staticmethod
    def encode_payload(data: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
        """Keep text readable and binary exact."""
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii"), "base64"

    def original_payload(self) -> bytes:
        """The original message body, byte for byte."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")
