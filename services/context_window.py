"""The context given to a model, bounded in tokens per agent, and what was left out.

An agent declares ``ContextPolicy(max_tokens=..., strategy=...)``. Before each model
call the conversation is measured (`estimate_tokens`); if it is over the bound,
older turns give way by the policy's strategy:

- ``drop_oldest``: system messages and the newest message stay; the oldest other
  turns are dropped until the rest fits.
- ``keep_system_and_task``: as ``drop_oldest``, and the first user message (the
  task) stays too: the middle of the conversation goes.
- ``summarize``: as ``drop_oldest``, and the dropped turns are replaced by one
  system message with their summary, written by the agent's model in a journaled
  model step of its own (so a replay gets the same summary).

An assistant turn that asked for tools and the tool results answering it are
kept or dropped together, so the model never sees an answer without its
question. What was dropped is journaled with the model call. If the messages
that must stay are over the bound on their own, the call is refused
(``too_large``): nothing silently disappears.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts.errors import ErrorCode, ErrorInfo
from services.errors import StepFailedError
from services.llm import ChatMessage

Strategy = Literal["drop_oldest", "keep_system_and_task", "summarize"]

SUMMARY_PROMPT = (
    "Summarize the following earlier part of a conversation in a few sentences. Keep "
    "facts, names, numbers and decisions; leave out pleasantries."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextPolicy:
    """How many tokens a model call's conversation may hold, and what gives way."""

    max_tokens: int | None = None
    """The bound (estimated, see `estimate_tokens`); None: no bound but the byte limit."""
    strategy: Strategy = "drop_oldest"
    summary_tokens: int = 256
    """Room kept for the summary, and the summary call's output limit (``summarize``)."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"context max_tokens must be at least 1, got {self.max_tokens}")
        if self.summary_tokens < 1:
            raise ValueError(f"summary_tokens must be at least 1, got {self.summary_tokens}")


def estimate_tokens(message: ChatMessage) -> int:
    """A conservative token estimate: a third of the UTF-8 bytes, plus framing.

    Tokenizers differ by model; English averages about four bytes per token, so
    this over-counts rather than lets a conversation slip past the bound.
    """
    text = message.content + "".join(c.name + str(c.arguments) for c in message.tool_calls)
    return math.ceil(len(text.encode()) / 3) + 4


@dataclass
class Fitted:
    """The conversation to send, and a record of what was left out (None: nothing)."""

    messages: list[ChatMessage]
    record: dict[str, Any] | None = None
    dropped: list[ChatMessage] = field(default_factory=list)


def _units(messages: Sequence[ChatMessage]) -> list[list[int]]:
    """Indices grouped so that tool results stay with the turn that asked for them."""
    units: list[list[int]] = []
    for i, message in enumerate(messages):
        if message.role == "tool" and units and messages[units[-1][0]].tool_calls:
            units[-1].append(i)
        else:
            units.append([i])
    return units


def _protected(messages: Sequence[ChatMessage], unit: list[int], strategy: Strategy) -> bool:
    first = messages[unit[0]]
    if first.role == "system" or unit[-1] == len(messages) - 1:
        return True
    if strategy == "keep_system_and_task":
        first_user = next((i for i, m in enumerate(messages) if m.role == "user"), None)
        return first_user in unit
    return False


def fit(messages: Sequence[ChatMessage], policy: ContextPolicy) -> Fitted:
    """Drop turns by ``policy`` until the conversation fits (no summary yet)."""
    limit = policy.max_tokens
    if limit is None:
        return Fitted(list(messages))
    sizes = [estimate_tokens(m) for m in messages]
    before = sum(sizes)
    if before <= limit:
        return Fitted(list(messages))
    room = limit - (policy.summary_tokens if policy.strategy == "summarize" else 0)
    total, dropped = before, set[int]()
    for unit in _units(messages):
        if total <= room:
            break
        if not _protected(messages, unit, policy.strategy):
            dropped.update(unit)
            total -= sum(sizes[i] for i in unit)
    if total > room:
        message = (
            f"the messages that must stay ({policy.strategy}) are about {total} tokens, over "
            f"this agent's context bound of {limit}; shorten them or raise the bound"
        )
        raise StepFailedError(
            message, ErrorInfo(code=ErrorCode.TOO_LARGE, message=message, retryable=False)
        )
    kept = [m for i, m in enumerate(messages) if i not in dropped]
    record = {
        "strategy": policy.strategy, "max_tokens": limit, "tokens_before": before,
        "tokens_after": total,
        "dropped": [messages[i].model_dump(mode="json") for i in sorted(dropped)],
    }  # fmt: skip
    return Fitted(kept, record, [messages[i] for i in sorted(dropped)])


async def fit_or_summarize(
    messages: Sequence[ChatMessage],
    policy: ContextPolicy,
    summarize: Callable[[list[ChatMessage], int], Awaitable[str]],
) -> Fitted:
    """`fit`, then for ``summarize`` replace what was dropped by its summary, written by
    ``summarize(conversation, max_tokens)`` (a journaled model call)."""
    fitted = fit(messages, policy)
    if policy.strategy != "summarize" or not fitted.dropped:
        return fitted
    earlier = "\n".join(f"{m.role}: {m.content}" for m in fitted.dropped)
    summary = await summarize(
        [
            ChatMessage(role="system", content=SUMMARY_PROMPT),
            ChatMessage(role="user", content=earlier),
        ],
        policy.summary_tokens,
    )
    assert fitted.record is not None
    head = f"Summary of {len(fitted.dropped)} earlier messages: "
    # The summary's own tokens are counted like any message's: cut it to the room left.
    room = (policy.max_tokens or 0) - fitted.record["tokens_after"]
    text = (head + summary).encode()[: max(0, (room - 4) * 3)].decode(errors="ignore")
    note = ChatMessage(role="system", content=text)
    leading = next((i for i, m in enumerate(fitted.messages) if m.role != "system"), 0)
    fitted.messages.insert(leading, note)
    fitted.record["summary"] = note.content
    fitted.record["tokens_after"] += estimate_tokens(note)
    return fitted
