"""A service file: the limits of one deployed service, set by its operator, not its code.

The code declares an agent's or tool's defaults; the team that runs it tunes them per
deployment without a new image (``ballast run MODULE:OBJECT --service-file FILE``, or
``BALLAST_SERVICE_FILE``). TOML, for example::

    [pool]                 # any service
    size = 16
    timeout_s = 10
    max_replicas = 4

    [retry]                # any service
    max_deliveries = 5
    initial_delay_s = 0.5

    # agents only
    tools = ["lookup_order", "refund"]   # the allow-list, replacing the code's
    delegates = []
    max_tokens = 512

    [loop_guard]
    max_identical_calls = 2

    [context]              # the token bound of a model call's conversation
    max_tokens = 8000
    strategy = "summarize" # or drop_oldest, keep_system_and_task

    [session]              # seconds
    idle_timeout = 3600
    max_age = 604800

    [budget.per_task]      # a table replaces that scope's caps as a whole
    steps = 20
    cost_usd = "0.50"

A section changes only the keys it names. Every key is checked: a misspelt key or a
wrong value is an error that names the file and the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.errors import ConfigurationError
from services.specs import AgentSpec, ServiceSpec

SECTIONS = ("pool", "retry")
"""Tables every service may have."""
AGENT_SECTIONS = ("loop_guard", "budget", "session", "context")
AGENT_VALUES: dict[str, Any] = {
    "tools": tuple[str, ...],
    "delegates": tuple[str, ...],
    "max_tokens": int,
    "max_context_bytes": int,
}
"""Plain values an agent's file may set, with their types."""


def read_service_file(path: Path) -> dict[str, Any]:
    """The file's contents; a missing or malformed file is a `ConfigurationError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the service file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"the service file {path} is not valid TOML: {exc}") from exc


def configured(spec: ServiceSpec, path: Path) -> ServiceSpec:
    """``spec`` with the limits of the service file at ``path`` applied."""
    data = read_service_file(path)
    is_agent = isinstance(spec, AgentSpec)
    tables = SECTIONS + AGENT_SECTIONS if is_agent else SECTIONS
    values = AGENT_VALUES if is_agent else {}
    unknown = sorted(set(data) - set(tables) - set(values))
    if unknown:
        raise ConfigurationError(
            f"{path}: {', '.join(unknown)} cannot be set for {spec.service}; "
            f"known here: {', '.join(sorted((*tables, *values)))}"
        )
    changes: dict[str, Any] = {}
    for key, given in data.items():
        try:
            if key in values:
                changes[key] = TypeAdapter(values[key]).validate_python(given)
            else:
                changes[key] = _merged(getattr(spec, key), given)
        except (ValidationError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"{path}: [{key}] is not valid: {exc}") from exc
    return dataclasses.replace(spec, **changes)


def _merged(current: Any, given: Any) -> Any:
    """``current`` (a policy dataclass) with the keys of ``given`` replaced, validated."""
    if not isinstance(given, dict):
        raise TypeError(f"expected a table, got {given!r}")
    names = {f.name for f in dataclasses.fields(current)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"unknown key {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    merged = {name: getattr(current, name) for name in names} | given
    return TypeAdapter(type(current)).validate_python(merged)
