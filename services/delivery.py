"""How every Ballast consumer handles one delivery of a message.

The steps, the same for agents and tools::

    parse ──invalid──────────────────────────────────────────▶ dead letter, terminate
      │
    run in the pool (timeout; progress reported to the broker while it runs)
      │ ok ──▶ the handler committed its effect, inbox entry and outputs ──▶ ack
      │ already processed (inbox) ──────────────────────────────────────▶ ack
      │ failed, retryable, deliveries left ──▶ nak with backoff + jitter (broker redelivers)
      │ failed for good ──▶ dead letter + error outputs in one transaction ──▶ terminate

Retries go through the broker, so they survive a crash of this process. The
consumer's ``max_deliver`` is one more than the policy's: if the process dies
during the last delivery, the spare delivery dead-letters the message.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

import structlog
from faststream.nats.message import NatsMessage
from pydantic import BaseModel, ValidationError

from bulkheads import HandlerTimeoutError, RetryPolicy, WorkerPool
from contracts.dead_letter import DeadLetter
from contracts.errors import ErrorCode, ErrorInfo
from contracts.subjects import Header, dlq_subject
from contracts.wire import utc_now
from outbox import AlreadyProcessedError, Database, OutboxError, UnitOfWork, record_failure
from services.errors import (
    DeadlineExceededError,
    HandlerError,
    InvalidMessageError,
    TaskFailedError,
)
from services.specs import ServiceSpec

log = structlog.get_logger("ballast.delivery")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message, as a handler sees it."""

    subject: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    """1 on the first delivery, 2 on the first redelivery, ..."""
    stream_seq: int | None
    published_at: datetime

    @property
    def message_id(self) -> str | None:
        return self.headers.get(Header.MSG_ID)

    @classmethod
    def of(cls, msg: NatsMessage) -> Delivery:
        raw = msg.raw_message
        meta = raw.metadata
        return cls(
            subject=raw.subject,
            body=raw.data,
            headers=dict(raw.headers or {}),
            attempt=meta.num_delivered or 1,
            stream_seq=meta.sequence.stream if meta.sequence else None,
            published_at=meta.timestamp.astimezone(UTC) if meta.timestamp else utc_now(),
        )


@dataclass(frozen=True, slots=True)
class Output:
    """A message a consumer publishes through the outbox."""

    subject: str
    payload: BaseModel
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None


_FAILURE_RULES: tuple[
    tuple[type[Exception] | tuple[type[Exception], ...], ErrorCode, bool], ...
] = (
    ((InvalidMessageError, ValidationError), ErrorCode.INVALID_MESSAGE, False),
    (DeadlineExceededError, ErrorCode.DEADLINE_EXCEEDED, False),
    (HandlerTimeoutError, ErrorCode.TIMEOUT, True),
    # What the run waited for already used up its own retries: repeating it cannot help.
    (TaskFailedError, ErrorCode.HANDLER_ERROR, False),
)
"""Exception types whose code and retryability are fixed, checked in order."""


def describe_failure(exc: Exception) -> ErrorInfo:
    """Turn an exception from a handler into the wire error, deciding retryability."""
    for types, code, retryable in _FAILURE_RULES:
        if isinstance(exc, types):
            info = ErrorInfo.from_exception(exc, code=code, retryable=retryable)
            if isinstance(exc, TaskFailedError):
                info = info.model_copy(
                    update={"details": {**info.details, "cause": exc.error.code}}
                )
            return info
    if isinstance(exc, HandlerError):
        return ErrorInfo.from_exception(exc, code=ErrorCode.HANDLER_ERROR, retryable=exc.retryable)
    if isinstance(exc, OutboxError):
        return ErrorInfo.from_exception(exc, code=ErrorCode.UNAVAILABLE, retryable=exc.retryable)
    return ErrorInfo.from_exception(exc, code=ErrorCode.HANDLER_ERROR, retryable=True)


class Consumer(ABC, Generic[M]):
    """One durable consumer: an agent's or a tool's. Subclasses say how to process a message."""

    def __init__(self, spec: ServiceSpec, *, subject: str, db: Database, ack_wait_s: float) -> None:
        self.service = spec.service
        self.subject = subject
        self.pool = WorkerPool(spec.service, spec.pool)
        self.retry: RetryPolicy = spec.retry
        self.db = db
        self.ack_wait_s = ack_wait_s

    @abstractmethod
    def parse(self, delivery: Delivery) -> M:
        """The message model; raise `InvalidMessageError` or a ValidationError if not one."""

    @abstractmethod
    def key(self, message: M) -> str:
        """The idempotency key of the message (its inbox key)."""

    @abstractmethod
    def deadline(self, message: M) -> datetime | None:
        """The instant after which the message must not be acted on, if any."""

    @abstractmethod
    async def process(self, message: M, delivery: Delivery) -> None:
        """Do the work and commit its effect, inbox entry and outputs in one transaction.

        Called only for a message not processed before and not past its deadline.
        """

    @abstractmethod
    def failure_outputs(self, message: M, delivery: Delivery, error: ErrorInfo) -> Sequence[Output]:
        """What the caller must be told when the message failed for good."""

    async def __call__(self, msg: NatsMessage) -> None:
        """FastStream handler: process one delivery; always ends in ack, nak or term."""
        delivery = Delivery.of(msg)
        with structlog.contextvars.bound_contextvars(
            service=self.service,
            message_id=delivery.message_id,
            task_id=delivery.headers.get(Header.TASK_ID),
            attempt=delivery.attempt,
        ):
            try:
                message = self.parse(delivery)
            except (InvalidMessageError, ValidationError) as exc:
                await self._give_up(msg, delivery, None, describe_failure(exc), utc_now())
                return
            await self._run(msg, delivery, message)

    async def _run(self, msg: NatsMessage, delivery: Delivery, message: M) -> None:
        if delivery.attempt > self.retry.max_deliveries:
            error = ErrorInfo(
                code=ErrorCode.INTERNAL,
                message="a worker stopped during the last allowed delivery; not tried again",
                retryable=False,
            )
            await self._give_up(msg, delivery, message, error, delivery.published_at)
            return
        keep_alive = asyncio.create_task(self._report_progress(msg))
        try:
            await self.pool.run(lambda: self._admit_and_process(message, delivery))
        except AlreadyProcessedError:
            log.info("delivery.already_processed")
        except Exception as exc:
            await self._failed(msg, delivery, message, exc)
            return
        finally:
            keep_alive.cancel()
        await msg.ack()

    async def _admit_and_process(self, message: M, delivery: Delivery) -> None:
        key = self.key(message)
        async with UnitOfWork(self.db) as check:
            done = await check.processed(self.service, key)
        if done is not None:
            # Its outputs committed with that entry; the relay publishes (or did) them.
            log.info("delivery.repeat_ignored", key=key)
            return
        deadline = self.deadline(message)
        if deadline is not None and deadline <= utc_now():
            raise DeadlineExceededError(f"{key} expired at {deadline.isoformat()}")
        await self.process(message, delivery)

    async def _report_progress(self, msg: NatsMessage) -> None:
        # Long runs (an agent waiting for its tools) must not look dead to the broker.
        interval = max(0.2, self.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _failed(
        self, msg: NatsMessage, delivery: Delivery, message: M, exc: Exception
    ) -> None:
        error = describe_failure(exc)
        log.warning(
            "delivery.failed", code=error.code, error=error.message, retryable=error.retryable
        )
        first_failure_at = utc_now()
        try:
            failure = await record_failure(self.db, self.service, self.key(message), error.message)
            first_failure_at = failure.first_failure_at
        except OutboxError as db_exc:
            log.warning("delivery.failure_not_recorded", error=str(db_exc))
        if error.retryable and not self.retry.is_last(delivery.attempt):
            delay = self.retry.backoff_s(delivery.attempt)
            log.info("delivery.retry_scheduled", delay_s=round(delay, 4))
            await msg.nack(delay=delay)
            return
        await self._give_up(msg, delivery, message, error, first_failure_at)

    async def _give_up(
        self,
        msg: NatsMessage,
        delivery: Delivery,
        message: M | None,
        error: ErrorInfo,
        first_failure_at: datetime,
    ) -> None:
        payload, encoding = DeadLetter.encode_payload(delivery.body)
        dead = DeadLetter(
            service=self.service,
            subject=delivery.subject,
            stream_seq=delivery.stream_seq,
            payload=payload,
            payload_encoding=encoding,
            headers=delivery.headers,
            error=error,
            attempts=delivery.attempt,
            first_failure_at=first_failure_at,
            last_failure_at=utc_now(),
        )
        outputs = list(self.failure_outputs(message, delivery, error)) if message else []
        try:
            async with UnitOfWork(self.db) as uow:
                uow.publish(
                    dlq_subject(self.service),
                    dead,
                    # Dead-lettering the same delivery twice keeps one copy.
                    message_id=f"dlq:{self.service}:{delivery.stream_seq}",
                )
                for out in outputs:
                    uow.publish(
                        out.subject, out.payload, headers=out.headers, message_id=out.message_id
                    )
        except OutboxError as exc:
            # Not lost: the broker redelivers, and this delivery's outcome is decided again.
            log.error("delivery.dead_letter_failed", error=str(exc))
            await msg.nack(delay=self.retry.max_delay_s)
            return
        await msg.reject()
        log.error("delivery.dead_lettered", code=error.code, error=error.message)
