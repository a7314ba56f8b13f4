"""Limits on bad input, and secrets kept out of logs, journals and dead letters."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from pydantic import BaseModel, JsonValue

from contracts import ErrorCode, Stream, TaskRequest, TaskStatus
from contracts.subjects import tool_service
from outbox import sqlite_url
from services.agent_context import AgentContext
from services.app import Ballast
from services.client import BallastClient
from services.dead_letters import dead_letter_counts, dead_letters
from services.embedded import EmbeddedNats
from services.errors import StepFailedError
from services.llm import ChatMessage, ScriptedModel
from services.stream_reader import stored_messages
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, TEST_KEY, TRUST_TEST_KEY, eventually, unique
from tests.services.callers import caller_call, publish_call
from tests.services.conftest import Hosts

ROOT = Path(__file__).resolve().parents[2]


class Text(BaseModel):
    text: str


class TestSizes:
    async def test_an_oversized_message_is_dead_lettered_unread(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        name = unique("small")
        runs = 0

        @app.tool(name)
        async def small(ctx: ToolContext, args: Text) -> str:
            nonlocal runs
            runs += 1
            return "ok"

        await hosts.start(nats_server, app.specs, max_payload_bytes=2048)
        client = await hosts.client(nats_server)
        call = caller_call(name, call_id=f"{unique('big')}:1", text="x" * 5000)
        await publish_call(client.js, call)

        async def dead() -> bool:
            return (await dead_letter_counts(client.js)).get(tool_service(name), 0) == 1

        await eventually(dead, what="the dead letter")
        (letter,) = [d.letter async for d in dead_letters(client.js, tool_service(name))]
        assert letter.error.code is ErrorCode.TOO_LARGE
        assert "over the limit of 2048" in letter.error.message
        assert len(letter.payload) <= 2048
        assert runs == 0

    async def test_a_conversation_over_the_agents_limit_is_refused(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        agent = unique("chatty")

        @app.agent(agent, model=ScriptedModel("m", lambda m, t: "hi"))
        async def chatty(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            try:
                await ctx.llm([ChatMessage(role="user", content="word " * 100_000)])
            except StepFailedError as exc:
                return exc.error.code.value
            return "sent"

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        result = await client.run(TaskRequest(agent=agent, principal=PRINCIPAL), timeout_s=20)
        assert result.output == ErrorCode.TOO_LARGE.value


SECRET = "s3cr3t-TOKEN-987654"  # noqa: S105 - the secret the test hunts for
UNDECLARED = "sk-live" + "0123456789abcdefghijKLMN"  # an API key nobody configured as secret


async def test_a_known_secret_never_reaches_logs_journals_or_dead_letters(
    own_nats: EmbeddedNats, tmp_path: Path
) -> None:
    """A real service process handles a configured secret and an unconfigured API key
    carelessly: logs them, passes them to tools, fails with them in the error. Neither
    appears in its log, its journal or the dead letters; the redaction marker does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")} | {
        "BALLAST_NATS_URL": own_nats.url,
        "BALLAST_DATABASE_URL": sqlite_url(tmp_path / "leaky.db"),
        "BALLAST_AUTO_MIGRATE": "true",
        "BALLAST_DATA_DIR": str(tmp_path),
        "BALLAST_LOG_FORMAT": "json",
        "BALLAST_SECRETS": f'["{SECRET}"]',
        "LEAKY_KEY": SECRET,
        "LEAKY_API_KEY": UNDECLARED,
        **TRUST_TEST_KEY,
    }
    log_path = tmp_path / "leaky.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "run", "tests.security.leaky_app:app",
            cwd=ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with BallastClient(own_nats.url, signer=TEST_KEY) as client:
            await eventually(_dlq_stream(client), timeout_s=30, what="the service to start")
            await asyncio.sleep(1.0)  # the agent's consumer is declared after the streams
            result = await client.run(TaskRequest(agent="leaky", principal=PRINCIPAL), timeout_s=30)
            letters = [
                raw.data or b""
                async for raw in stored_messages(client.js, Stream.DLQ.value, "ballast.dlq.>")
            ]
    finally:
        proc.terminate()
        await proc.wait()
    assert result.status is TaskStatus.FAILED
    assert len(letters) == 2, "the tool's and the agent's dead letters"
    with closing(sqlite3.connect(tmp_path / "leaky.db")) as db:
        rows = db.execute("SELECT request, outcome FROM ballast_journal").fetchall()
    journal = "\n".join(f"{request} {outcome}" for request, outcome in rows)
    places = {
        "log": log_path.read_text(),
        "journal": journal,
        "dead letters": b"\n".join(letters).decode(),
    }
    for where, text in places.items():
        assert SECRET not in text, f"the secret is in the {where}"
        assert UNDECLARED not in text, f"the API key is in the {where}"
        assert "[REDACTED]" in text, f"nothing secret passed through the {where}"


def _dlq_stream(client: BallastClient):  # type: ignore[no-untyped-def]
    import nats.js.errors

    async def check() -> bool:
        try:
            await client.js.stream_info(Stream.DLQ.value)
        except nats.js.errors.NotFoundError:
            return False
        return True

    return check
