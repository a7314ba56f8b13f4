"""``ballast memory``: an operator lists, shows and invalidates entries across owners."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.wire import utc_now
from outbox import Database, UnitOfWork
from outbox import memory as store
from outbox.memory import MemoryOwner, Scope
from tests.services.test_cli import aballast, cli_env


async def test_ls_show_and_invalidate_by_tag(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        async with UnitOfWork(db) as uow:
            for user, key, tags in (
                ("alice", "plan", ("doc:kb-101",)),
                ("bob", "plan", ("doc:kb-101", "doc:kb-7")),
                ("bob", "tone", ()),
            ):
                owner = MemoryOwner(Scope.USER, "acme", (user,))
                await store.put(
                    uow, owner, key, {"from": user}, source="agent:triage", tags=tags,
                    expires_at=None, now=utc_now(),
                )  # fmt: skip
    finally:
        await db.dispose()
    env = cli_env(BALLAST_DATABASE_URL=database_url, BALLAST_DATA_DIR=str(tmp_path))

    listed = await aballast("memory", "ls", "--tag", "doc:kb-101", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert sorted(e["owner"][1] for e in entries) == ["alice", "bob"]

    shown = await aballast("memory", "show", str(entries[0]["id"]), env=env)
    assert json.loads(shown.stdout)["source"] == "agent:triage"

    done = await aballast(
        "memory", "invalidate", "--tag", "doc:kb-101", "--reason", "kb-101 rewritten", env=env
    )
    assert "invalidated 2 entries" in done.stdout
    live = json.loads((await aballast("memory", "ls", "--json", env=env)).stdout)
    assert [(e["owner"][1], e["key"]) for e in live] == [("bob", "tone")]
    kept = json.loads((await aballast("memory", "ls", "--all", "--json", env=env)).stdout)
    assert sorted(e["invalidated_reason"] or "" for e in kept) == ["", *["kb-101 rewritten"] * 2]

    table = await aballast("memory", "ls", "--all", env=env)
    assert "invalidated" in table.stdout
    refused = await aballast("memory", "invalidate", "--reason", "everything", env=env)
    assert refused.returncode == 2
    assert "say what to invalidate" in refused.stderr
    missing = await aballast("memory", "show", "999999", env=env)
    assert missing.returncode == 1
    assert "no memory entry 999999" in missing.stderr
