"""Human approval: the run suspends, a decision resumes it, even across a restart."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlmodel import col, select

from contracts import ApprovalStatus, ErrorCode, TaskRequest, TaskStatus
from outbox import Database, sqlite_url
from outbox.journal import load_journal
from services.approval_api import approval_app
from services.approvals import Approvals
from services.client import BallastClient
from services.embedded import EmbeddedNats, free_port
from services.host import ServiceHost
from services.replay import replay_run
from tests.helpers import TEST_KEY, TRUST_TEST_KEY, eventually, settings_for
from tests.security.app import DOCUMENTS, Effect, app
from tests.security.test_injection import VICTIM

ROOT = Path(__file__).resolve().parents[2]
READ_THEN_MAIL = 'CALL search_docs {"q": "benign"}\nCALL send_email {"to": "team@acme.com"}'


def mail_task() -> TaskRequest:
    return TaskRequest(
        agent="assistant", input={"request": READ_THEN_MAIL}, input_trusted=True, principal=VICTIM
    )


async def one_pending(approvals: Approvals, task_id: str) -> str:
    async def found() -> bool:
        return any(
            s.request.task_id == task_id and s.request.status is ApprovalStatus.PENDING
            for s in await approvals.all("assistant")
        )

    await eventually(found, timeout_s=30, what="an approval request")
    (stored,) = [s for s in await approvals.all("assistant") if s.request.task_id == task_id]
    return stored.request.approval_id


async def mails(db: Database, task_id: str) -> int:
    async with db.session() as session:
        rows = await session.execute(
            select(Effect).where(col(Effect.task_id) == task_id, col(Effect.tool) == "send_email")
        )
        return len(rows.scalars().all())


@pytest.fixture
async def office(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ServiceHost, BallastClient, Approvals]]:
    DOCUMENTS["benign"] = "The office opens at nine."
    settings = settings_for(
        own_nats.url, database_url, tmp_path, approval_ttl_s=600, approval_sweep_s=0.2
    )
    async with (
        ServiceHost(settings, app.specs, name="office") as host,
        BallastClient(own_nats.url, signer=TEST_KEY) as client,
    ):
        approvals = Approvals(client.js)
        await approvals.start()
        yield host, client, approvals


class TestInProcess:
    async def test_the_http_endpoint_needs_its_token_and_approves(
        self, office: tuple[ServiceHost, BallastClient, Approvals]
    ) -> None:
        host, client, approvals = office
        task = mail_task()
        await client.submit(task)
        approval_id = await one_pending(approvals, task.task_id)
        assert await mails(host.db, task.task_id) == 0, "nothing is sent before the decision"

        port = free_port()
        token = "t0ken-for-tests"  # noqa: S105 - the test's own endpoint
        api = approval_app(approvals, token=token, signer=TEST_KEY)
        server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="error"))
        serving = asyncio.create_task(server.serve())
        try:
            await eventually(_started(server), timeout_s=10, what="the endpoint")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/approvals")).status_code == 401
                wrong = {"Authorization": "Bearer nope"}
                assert (
                    await http.post(f"/approvals/{approval_id}/approve", headers=wrong)
                ).status_code == 401
                auth = {"Authorization": f"Bearer {token}"}
                listed = (await http.get("/approvals", headers=auth)).json()
                assert [a["approval_id"] for a in listed] == [approval_id]
                assert listed[0]["args"] == {"to": "team@acme.com"}
                decided = await http.post(
                    f"/approvals/{approval_id}/approve", headers=auth, json={"by": "alice"}
                )
                assert decided.status_code == 200
                assert decided.json()["decided_by"] == "http:alice"
        finally:
            server.should_exit = True
            await serving
        result = await client.wait(task.task_id, timeout_s=30)
        assert result.status is TaskStatus.COMPLETED
        assert await mails(host.db, task.task_id) == 1

    async def test_a_suspended_run_replays_to_where_it_waits_and_sends_nothing(
        self, office: tuple[ServiceHost, BallastClient, Approvals]
    ) -> None:
        """Replayed while it waits for a human, the run matches its journal and stops at the
        call awaiting approval: no tool runs, no second approval is asked for."""
        host, client, approvals = office
        task = mail_task()
        await client.submit(task)
        approval_id = await one_pending(approvals, task.task_id)
        before = await load_journal(host.db, task.task_id)

        report = await replay_run(app.agents["assistant"], before, task.task_id)

        assert report.matched, report
        assert report.ended == "stopped"
        assert report.divergence is None
        # search_docs, then send_email: each asked of the model, then called.
        assert [(e.kind, e.name) for seq, e in sorted(before.items()) if seq > 0] == [
            ("llm", "obedient"),
            ("tool", "search_docs"),
            ("llm", "obedient"),
            ("tool", "send_email"),
        ]
        assert (report.steps_matched, report.steps_in_journal) == (4, 4)
        assert report.error is not None
        assert "step 4" in report.error
        assert "send_email" in report.error
        assert await mails(host.db, task.task_id) == 0, "replay sends no mail"
        mine = [s for s in await approvals.all("assistant") if s.request.task_id == task.task_id]
        assert [(s.request.approval_id, s.request.status) for s in mine] == [
            (approval_id, ApprovalStatus.PENDING)
        ]
        after = await load_journal(host.db, task.task_id)
        assert {seq: (e.status, e.outcome) for seq, e in after.items()} == {
            seq: (e.status, e.outcome) for seq, e in before.items()
        }, "replay writes nothing to the journal"

        # The run itself is untouched: approved, it sends its one mail; replayed again, the
        # finished run matches to the end and sends none.
        await approvals.decide(
            "assistant", approval_id, approve=True, approver="alice", key=TEST_KEY
        )
        result = await client.wait(task.task_id, timeout_s=30)
        assert result.status is TaskStatus.COMPLETED
        assert await mails(host.db, task.task_id) == 1
        finished = await replay_run(
            app.agents["assistant"], await load_journal(host.db, task.task_id), task.task_id
        )
        assert finished.matched, finished
        assert finished.ended == "completed"
        assert finished.output == result.output
        assert await mails(host.db, task.task_id) == 1

    async def test_an_approval_nobody_decides_expires_as_denied(
        self, own_nats: EmbeddedNats, database_url: str, tmp_path: Path
    ) -> None:
        DOCUMENTS["benign"] = "The office opens at nine."
        settings = settings_for(
            own_nats.url, database_url, tmp_path, approval_ttl_s=1, approval_sweep_s=0.2
        )
        async with (
            ServiceHost(settings, app.specs, name="office") as host,
            BallastClient(own_nats.url, signer=TEST_KEY) as client,
        ):
            task = mail_task()
            result = await client.run(task, timeout_s=30)
            approvals = Approvals(client.js)
            await approvals.start()
            mine = [
                s for s in await approvals.all("assistant") if s.request.task_id == task.task_id
            ]
            assert await mails(host.db, task.task_id) == 0
            journal = await load_journal(host.db, task.task_id)
        assert [s.request.status for s in mine] == [ApprovalStatus.EXPIRED]
        assert result.status is TaskStatus.COMPLETED  # the agent reads the refusal and answers
        (mail_step,) = [e for e in journal.values() if e.name == "send_email"]
        assert mail_step.status == "failed"
        assert mail_step.outcome["error"]["code"] == ErrorCode.APPROVAL_DENIED.value


def _started(server: uvicorn.Server):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(server.started)

    return check


@pytest.mark.chaos
async def test_an_approval_given_while_the_agent_host_is_down_resumes_the_task(
    own_nats: EmbeddedNats, tmp_path: Path
) -> None:
    """Real processes: the agent host suspends the task and is killed with SIGKILL; the
    approval is given with the CLI; a new agent host process finishes the task."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")} | {
        "BALLAST_NATS_URL": own_nats.url,
        "BALLAST_ACK_WAIT_S": "2",
        "BALLAST_LOG_FORMAT": "json",
        "BALLAST_SIGNING_KEY": TEST_KEY.seed,
        **TRUST_TEST_KEY,
    }

    async def start(target: str, name: str) -> asyncio.subprocess.Process:
        with (tmp_path / f"{name}.log").open("a") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "run", target, cwd=ROOT,
                env=env | {"BALLAST_DATABASE_URL": sqlite_url(tmp_path / f"{name}.db"),
                           "BALLAST_DATA_DIR": str(tmp_path / name),
                           "BALLAST_AUTO_MIGRATE": "true"},
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    tools = await start("tests.security.app:tools_only", "tools")
    agent = await start("tests.security.app:assistant", "agent")
    try:
        async with BallastClient(own_nats.url, signer=TEST_KEY) as client:
            task = mail_task()
            await eventually(_consumer(client, "agent-assistant"), timeout_s=30, what="the agent")
            await client.submit(task)
            approvals = Approvals(client.js)
            await approvals.start()
            approval_id = await one_pending(approvals, task.task_id)

            async def suspended() -> bool:  # the suspended run's message is acknowledged
                info = await client.js.consumer_info("BALLAST_TASKS", "agent-assistant")
                return bool(info.num_ack_pending == 0)

            # Killed once the run is suspended: this agent allows one delivery, so a kill
            # between suspending and acknowledging would rightly end the task.
            await eventually(suspended, timeout_s=10, what="the run to be suspended")
            agent.kill()
            await agent.wait()
            approve = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "approvals", "approve", approval_id,
                "--by", "operator", cwd=ROOT,
                env=env | {"BALLAST_DATA_DIR": str(tmp_path / "cli")},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await approve.communicate()
            assert approve.returncode == 0, out.decode()
            agent = await start("tests.security.app:assistant", "agent")
            result = await client.wait(task.task_id, timeout_s=60)
    finally:
        for proc in (tools, agent):
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    assert result.status is TaskStatus.COMPLETED, (tmp_path / "agent.log").read_text()[-2000:]
    db = Database(sqlite_url(tmp_path / "tools.db"))
    try:
        assert await mails(db, task.task_id) == 1
    finally:
        await db.dispose()


def _consumer(client: BallastClient, name: str):  # type: ignore[no-untyped-def]
    import nats.js.errors

    async def check() -> bool:
        try:
            await client.js.consumer_info("BALLAST_TASKS", name)
        except nats.js.errors.NotFoundError:
            return False
        return True

    return check
