"""Circuit breakers shared by every replica through a NATS KV bucket.

Each replica counts outcomes in its own window (`bulkheads.CircuitBreaker`);
when one replica's window trips, it writes the open state to the bucket, and
every replica watching the bucket adopts it, so a breaker opened anywhere stops
calls everywhere. When the pause is over, one replica wins a compare-and-set
to half-open and makes the trial call; its outcome closes or reopens the
breaker for all. State changes are logged and published as
``ballast.event.breaker.<state>``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from bulkheads import Admission, BreakerPolicy, CircuitBreaker, CircuitOpenError, Shared
from contracts.breaker import BreakerChanged, BreakerState
from contracts.subjects import event_subject
from outbox import Database, OutboxError, UnitOfWork
from services.cancelling import cancel_all
from services.errors import HandlerError
from services.kv import kv_entries
from services.rate_limits import RateLimitedError

log = structlog.get_logger("ballast.breakers")

BUCKET = "ballast_breakers"
T = TypeVar("T")
_UNSAFE_KEY = re.compile(r"[^-/_=.a-zA-Z0-9]")


def _encode(shared: Shared) -> bytes:
    return json.dumps(
        {"state": shared.state.value, "until": shared.until, "failure_rate": shared.failure_rate}
    ).encode()


def _decode(data: bytes) -> Shared:
    raw = json.loads(data)
    return Shared(BreakerState(raw["state"]), float(raw["until"]), float(raw["failure_rate"]))


class SharedBreakers:
    """The breakers of one process, kept in step with every other replica."""

    def __init__(self, js: JetStreamContext, db: Database, policy: BreakerPolicy) -> None:
        self._js = js
        self._db = db
        self.policy = policy
        self.replica = uuid.uuid4().hex[:12]
        self._breakers: dict[str, CircuitBreaker] = {}
        self._revisions: dict[str, int] = {}
        self._kv: KeyValue | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self._kv = await self._js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(bucket=BUCKET, history=1)
        self._watch = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._watch is not None:
            await cancel_all([self._watch])

    def states(self) -> dict[str, BreakerState]:
        """Every breaker this replica knows (its own and those others share), by name."""
        return {name: breaker.state for name, breaker in self._breakers.items()}

    def breaker(self, name: str) -> CircuitBreaker:
        key = _UNSAFE_KEY.sub("_", name)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(key, self.policy)
        return self._breakers[key]

    async def call(
        self,
        name: str,
        work: Callable[[], Awaitable[T]],
        *,
        counts_as_failure: Callable[[Exception], bool],
    ) -> T:
        """Run ``work`` through the breaker ``name``; raise `CircuitOpenError` when it is open."""
        breaker = self.breaker(name)
        admission, proposal = breaker.admit()
        if admission is Admission.REJECT:
            raise CircuitOpenError(breaker.name, max(0.0, breaker.shared.until - time.time()))
        trial = admission is Admission.TRIAL
        if trial and (proposal is None or not await self._claim_trial(breaker, proposal)):
            raise CircuitOpenError(breaker.name, self.policy.open_for_s)
        try:
            result = await work()
        except Exception as exc:
            await self._settle(breaker, breaker.record(ok=not counts_as_failure(exc), trial=trial))
            raise
        await self._settle(breaker, breaker.record(ok=True, trial=trial))
        return result

    async def _claim_trial(self, breaker: CircuitBreaker, proposal: Shared) -> bool:
        # Compare-and-set on the revision this replica saw: only one replica wins the trial.
        assert self._kv is not None
        previous = breaker.state  # before the write: the watch may deliver it first
        try:
            revision = await self._kv.update(
                breaker.name, _encode(proposal), last=self._revisions.get(breaker.name, 0)
            )
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
            return False
        self._revisions[breaker.name] = revision
        self._change(breaker, proposal, previous)
        return True

    async def _settle(self, breaker: CircuitBreaker, change: Shared | None) -> None:
        if change is None:
            return
        assert self._kv is not None
        previous = breaker.state  # before the write: the watch may deliver it first
        try:
            self._revisions[breaker.name] = await self._kv.put(breaker.name, _encode(change))
        except (nats.errors.Error, OSError) as exc:
            log.warning("breaker.share_failed", breaker=breaker.name, error=str(exc))
        self._change(breaker, change, previous)

    def _change(self, breaker: CircuitBreaker, change: Shared, previous: BreakerState) -> None:
        breaker.adopt(change)
        if previous is not change.state:
            log.warning(
                "breaker.changed",
                breaker=breaker.name,
                state=change.state,
                previous=previous,
                failure_rate=round(change.failure_rate, 3),
            )
            asyncio.get_running_loop().create_task(self._announce(breaker.name, change, previous))

    async def _announce(self, name: str, change: Shared, previous: BreakerState) -> None:
        event = BreakerChanged(
            breaker=name,
            state=change.state,
            previous=previous,
            failure_rate=change.failure_rate,
            by=self.replica,
        )
        try:
            async with UnitOfWork(self._db) as uow:
                uow.publish(event_subject("breaker", change.state.value), event)
        except OutboxError as exc:
            log.warning("breaker.event_not_published", breaker=name, error=str(exc))

    async def _follow(self) -> None:
        """Adopt the states other replicas write; re-watch after a connection loss."""
        assert self._kv is not None
        while True:
            try:
                watcher = await self._kv.watchall()
                async for entry in watcher:
                    if entry is None or entry.value is None or entry.revision is None:
                        continue
                    self._revisions[entry.key] = entry.revision
                    self.breaker(entry.key).adopt(_decode(entry.value))
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("breaker.watch_restarting", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)


async def shared_breaker_states(js: JetStreamContext) -> dict[str, Shared]:
    """The state every breaker was last shared in, read from the bucket (for operators)."""
    try:
        kv = await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return {}
    entries = await kv_entries(js, kv, BUCKET)
    return {key: _decode(value) for key, value in sorted(entries.items())}


def is_outage(exc: Exception) -> bool:
    """What counts against a breaker: failures of the dependency, not refused requests.

    A ``HandlerError(retryable=False)`` means the dependency answered and said no; a
    429 means it is up and asks us to slow down (the rate limiter's business).
    """
    if isinstance(exc, RateLimitedError):
        return False
    return not isinstance(exc, HandlerError) or exc.retryable
