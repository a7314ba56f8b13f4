"""Redaction: secrets never reach logs, journals or dead letters.

Two nets: the configured secret values (API keys, tokens, the signing key,
database passwords: `Settings.secret_values`) replaced wherever they appear,
and patterns of well-known credential shapes (``sk-...`` API keys, bearer
tokens, nkey seeds) for secrets nobody configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

REDACTED = "[REDACTED]"

PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bS[UAO][A-Z2-7]{56}\b"),
)


class Redactor:
    """Replaces secrets in text and in JSON-like data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern in PATTERNS:
            value = pattern.sub(REDACTED, value)
        return value

    def __call__(self, value: Any) -> Any:
        """``value`` with every string in it redacted (dicts and lists walked)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        return value

    def processor(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor."""
        for key, item in event.items():
            if isinstance(item, str | dict | list | tuple):
                event[key] = self(item)
        return event
