"""How every Ballast consumer handles one delivery of a message.

The steps, the same for agents and tools::

    parse ──invalid──────────────────────────────────────────▶ dead letter, terminate
      │
    in the pool (timeout; progress reported to the broker throughout):
      inbox says processed ─────────────────────────────────────────────▶ ack
      another worker holds the claim ──▶ wait for it (no second run alongside)
      past its deadline ──▶ failed for good
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
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import anyio
import structlog
from faststream.nats.message import NatsMessage
from pydantic import BaseModel, ValidationError

from bulkheads import RetryPolicy, WorkerPool
from contracts.dead_letter import DeadLetter
from contracts.errors import ErrorCode, ErrorInfo
from contracts.ids import new_id
from contracts.subjects import Header, dlq_subject
from contracts.wire import utc_now
from outbox import AlreadyProcessedError, Database, OutboxError, UnitOfWork, record_failure
from outbox.claims import admit, release, renew
from services.errors import DeadlineExceededError, InvalidMessageError, TooLargeError
from services.failure_info import describe_failure
from services.keep_alive import KeepAlive
from services.metrics import Metrics
from services.redaction import Redactor
from services.specs import ServiceSpec

log = structlog.get_logger("ballast.delivery")

BUSY_POLL_S = 0.5
"""How often a delivery waiting for another worker's claim looks again."""

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
    payload: BaseModel | bytes
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """What every consumer of a host shares."""

    db: Database
    ack_wait_s: float
    max_payload_bytes: int
    redact: Redactor
    metrics: Metrics


async def _let_outputs_go_first() -> None:
    """Two turns of the event loop, so that the outputs a delivery committed leave first.

    The commit wakes the relay to publish them (a tool's result, a task's answer), but
    nothing after it yields until the ack and FastStream's exit path have run: about
    0.1-0.25 ms on this kind of machine that the next step waits for. In the first turn
    the relay hands the outputs to nats-py, in the second nats-py writes them out. Only
    when no other delivery of the consumer is in flight: under load the others give the
    relay its turns, and each turn costs about 3 us of CPU.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class Consumer(ABC, Generic[M]):
    """One durable consumer: an agent's or a tool's. Subclasses say how to process a message."""

    def __init__(self, spec: ServiceSpec, *, subject: str, settings: ConsumerSettings) -> None:
        self.service = spec.service
        self.subject = subject
        self.pool = WorkerPool(spec.service, spec.pool)
        self.retry: RetryPolicy = spec.retry
        self.settings = settings
        self.db = settings.db
        # Like the broker's own ack wait: a worker renews its claims with every sign of
        # life it sends, so a claim lapses when, and only when, its worker went quiet.
        self.lease = timedelta(seconds=settings.ack_wait_s)
        # The first report comes within two intervals (services.keep_alive), well in time.
        self._keep_alive = KeepAlive(settings.ack_wait_s / 3)
        # The series of every message, looked up once: a lookup by labels takes a lock.
        self._handler_seconds = settings.metrics.handler_seconds.labels(spec.service)
        self._acked = settings.metrics.messages.labels(spec.service, "acked")

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
        """Do the work; commit its effect, ``mark_processed`` and its outputs in one transaction.

        Called only for a message not processed before, not past its deadline, and
        claimed by this worker (marking it processed ends the claim).
        """

    def repeat_outputs(self, message: M, stored: bytes | None) -> Sequence[Output]:
        """What to send again when a processed message comes back (its stored result)."""
        return ()

    @abstractmethod
    async def on_failure(
        self, message: M, delivery: Delivery, error: ErrorInfo
    ) -> Sequence[Output]:
        """What to do and whom to tell when the message failed for good."""

    async def __call__(self, msg: NatsMessage) -> None:
        """FastStream handler: process one delivery; always ends in ack, nak or term."""
        delivery = Delivery.of(msg)
        # Tokens put back what was bound before; structlog's bound_contextvars would also
        # copy and scan the whole context on entry, a cost at every message.
        tokens = structlog.contextvars.bind_contextvars(
            service=self.service,
            message_id=delivery.message_id,
            task_id=delivery.headers.get(Header.TASK_ID),
            attempt=delivery.attempt,
        )
        try:
            await self._deliver(msg, delivery)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            # FastStream keeps the decoded value on the message, and the host's decoder
            # hands over the message itself: a reference cycle. Under load the garbage
            # collector would carry every message (body, headers, metadata) into its
            # older generations, scanned again at each of their collections, before
            # freeing it; without the cycle it goes when its delivery ends.
            msg.clear_cache()

    async def _deliver(self, msg: NatsMessage, delivery: Delivery) -> None:
        try:
            if len(delivery.body) > self.settings.max_payload_bytes:
                raise TooLargeError(
                    f"the message is {len(delivery.body)} bytes, over the limit of "
                    f"{self.settings.max_payload_bytes} (BALLAST_MAX_PAYLOAD_BYTES)"
                )
            message = self.parse(delivery)
        except (InvalidMessageError, ValidationError) as exc:
            await self._give_up(msg, delivery, None, describe_failure(exc), utc_now())
            return
        owner = new_id()
        # Long runs (an agent waiting for its tools) must not look dead to the broker.
        key = self.key(message)
        watched = self._keep_alive.watch(lambda: self._report_progress(msg, key, owner))
        try:
            await self._run(msg, delivery, message, owner)
        except asyncio.CancelledError:
            # Stopping, and the grace period is over: give the message back so that
            # another replica takes it now instead of after the ack wait.
            # FastStream cancels through an anyio cancel scope, which cancels every
            # later await too; only a shielded scope lets the hand-back complete.
            with anyio.CancelScope(shield=True):
                await self._hand_back(msg, key, owner)
            raise
        finally:
            self._keep_alive.stop(watched)

    async def _hand_back(self, msg: NatsMessage, key: str, owner: str) -> None:
        """Nak at once and give up the claim; no failure is recorded (nothing failed)."""
        with contextlib.suppress(Exception):
            await msg.nack()
        try:
            async with UnitOfWork(self.db) as uow:
                await release(uow, self.service, key, owner)
        except OutboxError as exc:
            log.warning("delivery.claim_not_released", error=str(exc))
        self.settings.metrics.messages.labels(self.service, "handed_back").inc()
        log.info("delivery.handed_back")

    async def _run(self, msg: NatsMessage, delivery: Delivery, message: M, owner: str) -> None:
        if delivery.attempt > self.retry.max_deliveries:
            error = ErrorInfo(
                code=ErrorCode.INTERNAL,
                message="a worker stopped during the last allowed delivery; not tried again",
                retryable=False,
            )
            await self._give_up(msg, delivery, message, error, delivery.published_at)
            return
        started = time.perf_counter()
        try:
            await self.pool.run(lambda: self._admit_and_process(message, delivery, owner))
        except AlreadyProcessedError:
            log.info("delivery.already_processed")
        except Exception as exc:  # every failure is classified, none is lost
            await self._failed(msg, delivery, message, exc, owner)
            return
        finally:
            self._handler_seconds.observe(time.perf_counter() - started)
        if self.pool.in_use == 0:
            await _let_outputs_go_first()
        self._acked.inc()
        await msg.ack()

    async def _admit_and_process(self, message: M, delivery: Delivery, owner: str) -> None:
        key = self.key(message)
        waited = False
        while True:
            admission = await admit(self.db, self.service, key, owner, self.lease)
            if admission.processed:
                # Nothing runs again; the stored result answers the repeat (the
                # original answer may have aged out of its stream).
                log.info("delivery.repeat_answered", key=key)
                async with UnitOfWork(self.db) as uow:
                    for out in self.repeat_outputs(message, admission.result):
                        uow.publish(out.subject, out.payload, headers=out.headers)
                return
            if admission.claimed:
                break
            if not waited:
                log.info("delivery.busy_elsewhere", key=key)
                waited = True
            # Another worker runs it now: wait for it to finish (or for its claim to lapse)
            # instead of running it alongside. The pool's timeout bounds the wait.
            await asyncio.sleep(BUSY_POLL_S)
        deadline = self.deadline(message)
        if deadline is not None and deadline <= utc_now():
            raise DeadlineExceededError(f"{key} expired at {deadline.isoformat()}")
        await self.process(message, delivery)

    async def _report_progress(self, msg: NatsMessage, key: str, owner: str) -> None:
        with contextlib.suppress(Exception):
            await msg.in_progress()
        try:
            async with UnitOfWork(self.db) as uow:
                await renew(uow, self.service, key, owner, self.lease)
        except OutboxError as exc:
            log.warning("delivery.claim_not_renewed", error=str(exc))

    async def _failed(
        self, msg: NatsMessage, delivery: Delivery, message: M, exc: Exception, owner: str
    ) -> None:
        error = describe_failure(exc)
        log.warning(
            "delivery.failed", code=error.code, error=error.message, retryable=error.retryable
        )
        first_failure_at = utc_now()
        key = self.key(message)
        try:
            async with UnitOfWork(self.db) as uow:
                failure = await record_failure(uow, self.service, key, error.message)
                await release(uow, self.service, key, owner)
            first_failure_at = failure.first_failure_at
        except OutboxError as db_exc:
            log.warning("delivery.failure_not_recorded", error=str(db_exc))
        if error.retryable and not self.retry.is_last(delivery.attempt):
            delay = self.retry.backoff_s(delivery.attempt)
            log.info("delivery.retry_scheduled", delay_s=round(delay, 4))
            self.settings.metrics.messages.labels(self.service, "retried").inc()
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
        redact = self.settings.redact
        # An oversized body is kept only in part: the dead letter must fit in a message.
        body = delivery.body[: self.settings.max_payload_bytes]
        payload, encoding = DeadLetter.encode_payload(body)
        dead = DeadLetter(
            service=self.service,
            subject=delivery.subject,
            stream_seq=delivery.stream_seq,
            payload=redact.text(payload) if encoding == "utf-8" else payload,
            payload_encoding=encoding,
            headers=redact(delivery.headers),
            error=error.model_copy(update={"message": redact.text(error.message)}),
            attempts=delivery.attempt,
            first_failure_at=first_failure_at,
            last_failure_at=utc_now(),
        )
        try:
            outputs = list(await self.on_failure(message, delivery, error)) if message else []
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
        except Exception as exc:
            log.error("delivery.dead_letter_failed", error=str(exc) or type(exc).__name__)
            await msg.nack(delay=self.retry.max_delay_s)
            return
        await msg.reject()
        self.settings.metrics.messages.labels(self.service, "dead_lettered").inc()
        log.error("delivery.dead_lettered", code=error.code, error=error.message)
