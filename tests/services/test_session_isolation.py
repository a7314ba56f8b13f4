"""No state bleeds between users or sessions: 100 interleaved sessions of 10 users, served
by two replicas of an agent (separate ``ballast run`` processes), each session bringing
its own facts. Every prompt the model got is read back from the journal: it holds the
facts of its own session (so the feature works) and never one of another user or
session. The ten users share session ids s0..s9, so the owner is what tells them apart."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from contracts import Principal, TaskRequest, TaskStatus
from outbox import Database
from outbox.journal import load_journal
from services.embedded import EmbeddedNats
from tests.services.test_crashes import agent_replicas

USERS, SESSIONS, TURNS = 10, 10, 3
FACT = re.compile(r"F-u(\d+)-s(\d+)-t(\d+)")


async def test_no_fact_reaches_another_users_or_another_sessions_prompt(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    owner_of: dict[str, tuple[int, int]] = {}
    replicas = agent_replicas("tests.procs.session_app:chat", own_nats, database_url, tmp_path)
    async with replicas as client:

        async def converse(user: int, session: int) -> None:
            principal = Principal(user_id=f"user{user}", tenant="acme")
            for turn in range(TURNS):
                task = TaskRequest(
                    agent="chat", principal=principal, session_id=f"s{session}",
                    input={"fact": f"F-u{user}-s{session}-t{turn}"},
                )  # fmt: skip
                owner_of[task.task_id] = (user, session)
                result = await client.run(task, timeout_s=120)
                assert result.status is TaskStatus.COMPLETED, result.error

        await asyncio.gather(*(converse(u, s) for u in range(USERS) for s in range(SESSIONS)))

    db = Database(database_url)
    try:
        prompts, pids = 0, set()
        for task_id, (user, session) in owner_of.items():
            journal = await load_journal(db, task_id)
            pids |= {e.outcome["value"] for e in journal.values() if e.name == "served by"}
            (prompt,) = [e.request for e in journal.values() if e.kind == "llm"]
            facts = {tuple(int(n) for n in m) for m in FACT.findall(str(prompt["messages"]))}
            assert {(u, s) for u, s, _ in facts} == {(user, session)}, (task_id, facts)
            # The session's earlier facts are all there: from its history and its memory.
            turn = max(t for _, _, t in facts)
            assert {t for _, _, t in facts} == set(range(turn + 1))
            prompts += 1
    finally:
        await db.dispose()
    assert prompts == USERS * SESSIONS * TURNS
    assert len(pids) == 2, "both replicas served sessions"
