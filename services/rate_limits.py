"""Rate limits of model providers, shared by every replica of every agent (NATS KV).

A provider allows so many requests and tokens per minute, per API key; every
replica calling it draws from the same allowance. `SharedRateLimiter` keeps the
use of each model (or each model and tenant) in the KV bucket `BUCKET`, as
counts per 1/60 of the window, and admits a call only if the last window (and a
margin, `SPAN`, so that no sliding window at the provider can ever see more) leaves
room for one more request and for its tokens. Admissions are compare-and-set updates of one key,
so replicas never admit past the limit together.

A call over the limit waits, within the task's deadline, instead of failing.
A provider's 429 with ``Retry-After`` pauses the model for every replica until
then (`SharedRateLimiter.pause`). Tokens are counted at their upper bound (the
input estimate plus the output limit), as the budget reserves them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from services.errors import ModelError

BUCKET = "ballast_rate_limits"
SLICES = 60
"""A window is counted in this many slices (seconds, for a minute)."""
SPAN = SLICES + 7
"""Slices counted: the window, one slice so that no window however placed sees more, and
six (a tenth of the window) for the time between admitting a call and its arrival at
the provider, which varies from call to call."""


class RateLimit(BaseModel):
    """What a provider allows per window (a minute unless ``window_s`` says otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int | None = Field(default=None, ge=1, description="Requests per window.")
    tokens: int | None = Field(default=None, ge=1, description="Tokens per window.")
    window_s: float = Field(default=60.0, gt=0)
    per_tenant: bool = Field(default=False, description="A separate allowance per tenant.")


class RateLimitedError(ModelError):
    """The provider said 429; ``retry_after_s`` is how long it asked us to wait."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retryable=True)
        self.retry_after_s = retry_after_s


@dataclass
class _Use:
    """The KV value of one key: use per slice, and a pause asked for by the provider."""

    slices: dict[int, list[int]] = field(default_factory=dict)
    """Slice number (time / slice length) -> [requests, tokens]."""
    paused_until: float = 0.0

    @classmethod
    def parse(cls, data: bytes | None) -> _Use:
        if not data:
            return cls()
        raw = json.loads(data)
        return cls({int(k): v for k, v in raw["slices"].items()}, raw["paused_until"])

    def dump(self) -> bytes:
        slices = {str(k): v for k, v in self.slices.items()}
        return json.dumps({"slices": slices, "paused_until": self.paused_until}).encode()


def _key(model: str, tenant: str | None) -> str:
    """A KV key for the model (and tenant): only the characters keys may hold."""
    parts = [model] if tenant is None else [model, tenant]
    return ".".join(re.sub(r"[^-/_=a-zA-Z0-9]", "_", p) for p in parts)


class SharedRateLimiter:
    """Admits model calls within the configured limits, across replicas."""

    def __init__(self, js: JetStreamContext, limits: dict[str, RateLimit]) -> None:
        self._js = js
        self._limits = limits
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        if self._limits:
            self._kv = await self._js.key_value(BUCKET)

    def limit(self, model: str) -> RateLimit | None:
        return self._limits.get(model)

    async def acquire(self, model: str, tenant: str, tokens: int, deadline: float | None) -> None:
        """Wait until a call of ``model`` using ``tokens`` fits, then count it.

        ``deadline`` is a `time.time` value; a wait past it raises a retryable
        `ModelError` (the task's own deadline decides what happens next).
        """
        limit = self._limits.get(model)
        if limit is None:
            return
        if limit.tokens is not None and tokens > limit.tokens:
            raise ModelError(
                f"a call of {model} may use {tokens} tokens, more than its limit of "
                f"{limit.tokens} per {limit.window_s:g} s: lower max_tokens or the context",
                retryable=False,
            )
        key = _key(model, tenant if limit.per_tenant else None)
        slice_s = limit.window_s / SLICES

        def count(use: _Use, now: float) -> float:
            current = int(now // slice_s)
            use.slices = {n: v for n, v in use.slices.items() if n > current - SPAN}
            if use.paused_until > now:
                return use.paused_until - now
            wait = _wait(use, limit, tokens, slice_s, now)
            if wait == 0:
                counted = use.slices.setdefault(current, [0, 0])
                counted[0] += 1
                counted[1] += tokens
            return wait

        while (wait := await self._update(key, count)) > 0:
            if deadline is not None and time.time() + wait > deadline:
                raise ModelError(
                    f"{model} is at its rate limit for {wait:.1f} s more, past the task's deadline",
                    retryable=True,
                )
            await asyncio.sleep(wait)

    async def pause(self, model: str, tenant: str, seconds: float) -> None:
        """The provider asked for ``seconds`` of quiet: every replica waits that long.

        A model without a configured limit is not counted in the bucket, so only this
        call waits (here).
        """
        limit = self._limits.get(model)
        if limit is None:
            await asyncio.sleep(seconds)
            return

        def paused(use: _Use, now: float) -> float:
            use.paused_until = max(use.paused_until, now + seconds)
            return 0.0

        await self._update(_key(model, tenant if limit.per_tenant else None), paused)

    async def _update(self, key: str, change: Callable[[_Use, float], float]) -> float:
        """Apply ``change(use, now)`` to the key by compare-and-set, again after a race.

        ``change`` returns 0 (its changes are written) or how long to wait (nothing is).
        """
        kv = self._bucket()
        while True:
            try:
                entry = await kv.get(key)
                use, revision = _Use.parse(entry.value), entry.revision
            except nats.js.errors.KeyNotFoundError:
                use, revision = _Use(), None
            wait = change(use, time.time())
            if wait > 0:
                return wait
            try:
                if revision is None:
                    await kv.create(key, use.dump())
                else:
                    await kv.update(key, use.dump(), last=revision)
                return 0.0
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another replica wrote in between: look again

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("start the rate limiter first")
        return self._kv


def _wait(use: _Use, limit: RateLimit, tokens: int, slice_s: float, now: float) -> float:
    """How long until the oldest slices leave the counted span far enough for one more
    call of ``tokens``; 0 if it fits now."""
    requests = sum(v[0] for v in use.slices.values())
    spent = sum(v[1] for v in use.slices.values())

    def fits() -> bool:
        return (limit.requests is None or requests + 1 <= limit.requests) and (
            limit.tokens is None or spent + tokens <= limit.tokens
        )

    if fits():
        return 0.0
    for n in sorted(use.slices):
        requests -= use.slices[n][0]
        spent -= use.slices[n][1]
        if fits():
            return max(0.0, (n + SPAN) * slice_s - now)
    return limit.window_s
