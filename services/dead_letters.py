"""Operating the dead-letter queue: list, show, redrive, purge.

Dead letters live in the ``BALLAST_DLQ`` stream, one subject per service
(``ballast.dlq.<service>``). A redrive publishes the original payload and
headers to the original subject again, under a new ``Nats-Msg-Id`` (the old one
may still be inside the deduplication window) and with the ``ballast-redrive``
header, then deletes the dead letter. Consumers still recognise the message by
its idempotency key, so redriving something that already succeeded does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext

from contracts.dead_letter import DeadLetter
from contracts.subjects import PREFIX, Header, Stream, dlq_subject
from services.errors import BrokerError
from services.stream_reader import stored_messages

ALL_DLQ = f"{PREFIX}.dlq.>"


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter and its sequence number in the DLQ stream (its handle for redrive)."""

    seq: int
    letter: DeadLetter


def _subject(service: str | None) -> str:
    return dlq_subject(service) if service else ALL_DLQ


async def dead_letter_counts(js: JetStreamContext) -> dict[str, int]:
    """Dead letters per service."""
    try:
        info = await js.stream_info(Stream.DLQ.value, subjects_filter=ALL_DLQ)
    except nats.js.errors.NotFoundError:
        return {}
    subjects = info.state.subjects or {}
    return {subject.removeprefix(f"{PREFIX}.dlq."): n for subject, n in sorted(subjects.items())}


async def dead_letters(
    js: JetStreamContext, service: str | None = None
) -> AsyncIterator[StoredDeadLetter]:
    """Dead letters of ``service`` (or of all services), oldest first."""
    try:
        async for raw in stored_messages(js, Stream.DLQ.value, _subject(service)):
            if raw.seq is not None and raw.data is not None:
                yield StoredDeadLetter(raw.seq, DeadLetter.model_validate_json(raw.data))
    except nats.js.errors.NotFoundError:
        return


async def dead_letter(js: JetStreamContext, seq: int) -> StoredDeadLetter:
    """The dead letter at ``seq``; raises `BrokerError` if there is none."""
    try:
        raw = await js.get_msg(Stream.DLQ.value, seq)
    except nats.js.errors.NotFoundError:
        raise BrokerError(
            f"no dead letter with sequence {seq}; list them with 'ballast dlq ls'"
        ) from None
    if raw.data is None:
        raise BrokerError(f"dead letter {seq} has no payload")
    return StoredDeadLetter(seq, DeadLetter.model_validate_json(raw.data))


async def redrive(js: JetStreamContext, stored: StoredDeadLetter) -> None:
    """Publish the original message again and remove the dead letter."""
    letter = stored.letter
    original_id = letter.headers.get(Header.MSG_ID, "")
    headers = {
        **letter.headers,
        Header.MSG_ID: f"{original_id}:redrive:{stored.seq}",
        Header.REDRIVE: str(stored.seq),
    }
    await js.publish(letter.subject, letter.original_payload(), headers=headers)
    # Already gone after a concurrent redrive or purge: the goal is reached either way.
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_msg(Stream.DLQ.value, stored.seq)


async def purge(js: JetStreamContext, service: str | None = None) -> int:
    """Delete the dead letters of ``service`` (or all); return how many were deleted."""
    counts = await dead_letter_counts(js)
    removed = counts.get(service, 0) if service else sum(counts.values())
    if removed:
        await js.purge_stream(Stream.DLQ.value, subject=_subject(service))
    return removed
