"""Subject, stream and header names: part of the wire contract.

Subjects (one stream each)::

    BALLAST_TASKS    ballast.task.<agent>                task requests to agents
    BALLAST_TOOLS    ballast.tool.<tool>                 tool calls
    BALLAST_RESULTS  ballast.result.<agent>.<task_id>    tool and child-task results for a run
    BALLAST_EVENTS   ballast.event.>                     task ended, side-effect events, ...
    BALLAST_DLQ      ballast.dlq.<service>               dead letters

A *service* is one consumer: ``agent-<name>`` or ``tool-<name>``.
"""

from __future__ import annotations

import re
from enum import StrEnum

from contracts.errors import InvalidNameError
from contracts.wire import NAME_PATTERN, TASK_ID_PATTERN

PREFIX = "ballast"


class Stream(StrEnum):
    """JetStream streams, one per kind of message."""

    TASKS = "BALLAST_TASKS"
    TOOLS = "BALLAST_TOOLS"
    RESULTS = "BALLAST_RESULTS"
    EVENTS = "BALLAST_EVENTS"
    DLQ = "BALLAST_DLQ"


STREAM_SUBJECTS: dict[Stream, str] = {
    Stream.TASKS: f"{PREFIX}.task.>",
    Stream.TOOLS: f"{PREFIX}.tool.>",
    Stream.RESULTS: f"{PREFIX}.result.>",
    Stream.EVENTS: f"{PREFIX}.event.>",
    Stream.DLQ: f"{PREFIX}.dlq.>",
}
"""The subjects each stream captures."""


class Header:
    """Header names carried by every Ballast message."""

    MSG_ID = "Nats-Msg-Id"
    """JetStream's deduplication id; Ballast sets it on every publish."""
    TRACEPARENT = "traceparent"
    """W3C trace context, so one task is one trace across services."""
    TASK_ID = "ballast-task-id"
    """The task a message belongs to, readable without parsing the payload."""
    PRINCIPAL = "ballast-principal"
    """The principal the message acts for."""
    DEADLINE = "ballast-deadline"
    """ISO 8601 UTC instant after which the message must not be acted on."""
    STEP_KEY = "ballast-step-key"
    """On results: the key of the step (``<task_id>:<seq>``) the result answers."""
    REDRIVE = "ballast-redrive"
    """On a message published again from the dead-letter queue: the dead letter's sequence."""


_NAME = re.compile(NAME_PATTERN)
_TASK_ID = re.compile(TASK_ID_PATTERN)
_SERVICE = re.compile(r"^(agent|tool)-[a-z][a-z0-9_]{0,63}$")


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise InvalidNameError(
            f"{what} {value!r} is not valid: it must match {pattern.pattern} "
            "(it becomes one token of a NATS subject)"
        )
    return value


def check_name(name: str) -> str:
    """Return ``name`` if it can name an agent or tool, else raise `InvalidNameError`."""
    return _checked(name, _NAME, "name")


def task_subject(agent: str) -> str:
    """Where task requests for ``agent`` are published."""
    return f"{PREFIX}.task.{check_name(agent)}"


def tool_subject(tool: str) -> str:
    """Where calls of ``tool`` are published."""
    return f"{PREFIX}.tool.{check_name(tool)}"


def result_subject(agent: str, task_id: str) -> str:
    """Where results for the run of ``task_id`` on ``agent`` are published."""
    return f"{PREFIX}.result.{check_name(agent)}.{_checked(task_id, _TASK_ID, 'task id')}"


def task_event_subject(status: str) -> str:
    """Where a task's end is announced, by status (``completed``, ``failed``, ...)."""
    return event_subject("task", status)


def event_subject(*tokens: str) -> str:
    """Where an event is published: ``ballast.event.<token>...``, e.g. ``ticket.created``."""
    if not tokens:
        raise InvalidNameError("an event subject needs at least one token after 'ballast.event'")
    return f"{PREFIX}.event." + ".".join(check_name(t) for t in tokens)


def agent_service(agent: str) -> str:
    """The service (consumer) name of an agent."""
    return f"agent-{check_name(agent)}"


def tool_service(tool: str) -> str:
    """The service (consumer) name of a tool."""
    return f"tool-{check_name(tool)}"


def dlq_subject(service: str) -> str:
    """Where dead letters of ``service`` (``agent-<name>`` or ``tool-<name>``) go."""
    return f"{PREFIX}.dlq.{_checked(service, _SERVICE, 'service')}"
