"""``ctx.conversation``: the conversation of the task's session, and only that one.

A task may name a session (``TaskRequest.session_id``). Its conversation is stored
per tenant, user and session (`outbox.sessions`), and the owner is taken from the
task's verified principal: a run cannot name another user's session, and the
same session id used by another user is another conversation.

Loading and extending the conversation are journaled steps, so a re-executed or
replayed run sees the history the first execution saw. A closed or expired
session is refused (``session_closed``) and never reaches a prompt again.
"""

from __future__ import annotations

from pydantic import JsonValue

from contracts.tasks import TaskRequest
from contracts.wire import utc_now
from outbox import UnitOfWork
from outbox.sessions import (
    SessionLifetime,
    SessionOwner,
    append_turns,
    close_session,
    load_turns,
)
from services.errors import HandlerError
from services.llm import ChatMessage
from services.steps import LocalSteps, StepKind

STORED_ROLES = ("system", "user", "assistant")
"""Turns a session keeps: what was said, not the tool traffic of one run."""


class Conversation:
    """The conversation of one run's session (``ctx.conversation``)."""

    def __init__(self, steps: LocalSteps, task: TaskRequest, lifetime: SessionLifetime) -> None:
        self._steps = steps
        self._task = task
        self._lifetime = lifetime

    @property
    def id(self) -> str | None:
        """The task's session id; None for a task outside any session."""
        return self._task.session_id

    def _owner(self) -> SessionOwner:
        if self._task.session_id is None:
            raise HandlerError(
                f"task {self._task.task_id} names no session; submit it with a session_id",
                retryable=False,
            )
        principal = self._task.principal
        return SessionOwner(principal.tenant, principal.user_id, self._task.session_id)

    async def history(self) -> list[ChatMessage]:
        """The conversation so far, oldest first (empty for a new session)."""
        owner = self._owner()

        async def work(uow: UnitOfWork) -> JsonValue:
            turns = await load_turns(uow, owner, self._lifetime, utc_now())
            return [{"role": t.role, "content": t.content} for t in turns]

        loaded = await self._steps.local_step(StepKind.SESSION, "history", None, work)
        assert isinstance(loaded, list)
        return [ChatMessage.model_validate(turn) for turn in loaded]

    async def append(self, *messages: ChatMessage) -> None:
        """Add turns to the conversation (beginning the session if it is new)."""
        owner = self._owner()
        for message in messages:
            if message.role not in STORED_ROLES or message.tool_calls:
                raise HandlerError(
                    "a session keeps system, user and assistant text; got a "
                    f"{message.role} turn{' with tool calls' if message.tool_calls else ''}",
                    retryable=False,
                )
        turns: list[tuple[str, str]] = [(m.role, m.content) for m in messages]

        async def work(uow: UnitOfWork) -> JsonValue:
            await append_turns(
                uow, owner, turns,
                task_id=self._task.task_id, lifetime=self._lifetime, now=utc_now(),
            )  # fmt: skip
            return len(turns)

        request: JsonValue = [{"role": role, "content": content} for role, content in turns]
        await self._steps.local_step(StepKind.SESSION, "append", request, work)

    async def close(self, reason: str = "closed by the agent") -> bool:
        """End the session for good; False if it was closed already or never began."""
        owner = self._owner()

        async def work(uow: UnitOfWork) -> JsonValue:
            return await close_session(uow, owner, reason, utc_now())

        closed = await self._steps.local_step(StepKind.SESSION, "close", {"reason": reason}, work)
        return bool(closed)
