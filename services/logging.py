"""structlog set-up: JSON lines in services, key-value in a terminal.

Context such as the task id, the message id and the service is bound with
``structlog.contextvars`` by the host around each message, so every line a
handler logs carries it without passing a logger around.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from services.redaction import Redactor
from services.telemetry import add_trace_ids

LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    fmt: LogFormat = "auto", level: str = "info", redactor: Redactor | None = None
) -> None:
    """Configure structlog (and stdlib logging underneath) once per process.

    With a ``redactor``, configured secrets and credential-shaped strings are
    removed from every event before it is rendered.
    """
    numeric = logging.getLevelNamesMapping()[level.upper()]
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            (redactor or Redactor()).processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (nats-py, faststream, sqlalchemy) log through stdlib: keep only their warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
