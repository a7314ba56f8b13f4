"""The dashboard in a real headless browser (Debian's chromium driven by Playwright).

It loads, lists a failed task, renders that task's timeline, and redrives a dead
letter from the DLQ view; screenshots go to test-output/. Sign-in and a broker
outage are checked over plain HTTP.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from pydantic import BaseModel, JsonValue

from bulkheads import RetryPolicy
from contracts import TaskRequest, TaskStatus
from outbox import Database
from services.agent_context import AgentContext
from services.app import Ballast
from services.client import BallastClient
from services.dashboard import BrokerLink, dashboard_app
from services.dead_letters import dead_letter_counts
from services.embedded import EmbeddedNats
from services.errors import HandlerError
from services.http_server import EmbeddedHttpServer
from services.tools import ToolContext
from tests.helpers import PRINCIPAL, eventually, unique
from tests.services.conftest import Hosts

OUTPUT = Path(os.environ.get("BALLAST_TEST_OUTPUT", "test-output"))
TOKEN = "dashboard-test-token"  # noqa: S105 - a test credential
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--metrics-recording-only",
]


class Ticket(BaseModel):
    title: str


@asynccontextmanager
async def serving(db: Database, server: EmbeddedNats) -> AsyncIterator[str]:
    broker = BrokerLink(lambda: BallastClient(server.url))
    http = EmbeddedHttpServer(dashboard_app(db, broker, token=TOKEN), host="127.0.0.1", port=0)
    await http.start()
    try:
        yield http.url
    finally:
        await http.stop()
        await broker.close()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("the dashboard test needs Debian's chromium: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_dashboard_lists_a_failed_task_shows_its_timeline_and_redrives_a_dead_letter(
    hosts: Hosts, nats_server: EmbeddedNats
) -> None:
    app = Ballast("desk")
    tool, agent = unique("ticket"), unique("desk")
    broken = False
    opened: list[str] = []

    @app.tool(tool, retry=RetryPolicy(max_deliveries=1))
    async def open_ticket(ctx: ToolContext, args: Ticket) -> str:
        if broken:
            raise HandlerError("the ticket system rejects our credentials", retryable=False)
        opened.append(args.title)
        return f"T-{len(opened)}"

    @app.agent(agent, tools=(tool,))
    async def desk(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        return await ctx.tool(tool, {"title": str(task.input["title"])})

    host = await hosts.start(nats_server, app.specs, metrics_interval_s=0.1)
    client = await hosts.client(nats_server)
    fine = TaskRequest(agent=agent, principal=PRINCIPAL, input={"title": "printer"})
    assert (await client.run(fine, timeout_s=30)).status is TaskStatus.COMPLETED
    broken = True
    failing = TaskRequest(agent=agent, principal=PRINCIPAL, input={"title": "laptop"})
    assert (await client.run(failing, timeout_s=30)).status is TaskStatus.FAILED
    tool_service = f"tool-{tool}"

    async def dead_lettered() -> bool:
        return (await dead_letter_counts(client.js)).get(tool_service) == 1

    await eventually(dead_lettered, what="the failed call in the tool's DLQ")
    OUTPUT.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the browser starts

    async with serving(host.db, nats_server) as url, chromium() as browser:
        page: Page = await browser.new_page(viewport={"width": 1300, "height": 900})
        await page.goto(f"{url}/login?token={TOKEN}")
        await page.wait_for_selector("#services")
        services = await page.inner_text("#services")
        assert f"agent-{agent}" in services
        assert tool_service in services
        failed_row = page.locator(f'#tasks tr[data-status="failed"]:has-text("{failing.task_id}")')
        assert await failed_row.count() == 1, "the failed task is listed with its status"
        done_row = page.locator(f'#tasks tr[data-status="completed"]:has-text("{fine.task_id}")')
        assert await done_row.count() == 1
        await page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

        await failed_row.get_by_role("link").click()
        await page.wait_for_selector("#timeline")
        assert await page.inner_text("#task-status") == "failed"
        assert "rejects our credentials" in await page.inner_text("#task-error")
        (step,) = await page.locator("#timeline tr.step-row").all()
        assert await step.get_attribute("data-status") == "failed"
        assert tool in await step.inner_text()
        assert "allowed" in await step.inner_text(), "the call's authorization is shown"
        bar = await step.locator(".bar").bounding_box()
        assert bar is not None
        assert bar["width"] > 0, "the step's bar is drawn"
        await page.screenshot(path=str(OUTPUT / "dashboard-task.png"), full_page=True)

        await page.goto(url)
        dlq_row = page.locator(f'#dlq tr:has-text("{tool_service}")')
        assert "1" in await dlq_row.inner_text()
        broken = False  # the fault is fixed; the operator redrives
        await dlq_row.get_by_role("button", name="Redrive all").click()
        await page.wait_for_selector("#redrove")
        assert await page.inner_text("#redrove") == "Redrove 1 dead letter(s)."

    async def gone() -> bool:
        return tool_service not in await dead_letter_counts(client.js)

    async def ran_again() -> bool:
        return len(opened) == 2

    await eventually(gone, what="the DLQ to be empty after the redrive")
    await eventually(ran_again, what="the redriven call to run")
    assert opened == ["printer", "laptop"], "the redriven call ran once"


async def test_dashboard_needs_the_token_and_survives_a_broker_outage(
    hosts: Hosts, own_nats: EmbeddedNats
) -> None:
    app = Ballast("quiet")
    agent = unique("quiet")

    @app.agent(agent)
    async def quiet(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        return "ok"

    host = await hosts.start(own_nats, app.specs)
    client = await hosts.client(own_nats)
    task = TaskRequest(agent=agent, principal=PRINCIPAL)
    assert (await client.run(task, timeout_s=30)).status is TaskStatus.COMPLETED

    async with serving(host.db, own_nats) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/")).headers["location"] == "/login"
        assert (await http.get("/login", params={"token": "wrong"})).status_code == 401
        assert (await http.post("/dlq/anything/redrive")).status_code == 303, "not signed in"
        signed = await http.get("/login", params={"token": TOKEN})
        assert signed.status_code == 303
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert TOKEN not in signed.headers["set-cookie"], "the cookie is not the token"

        forged = await http.post("/dlq/anything/redrive", headers={"origin": "http://evil.example"})
        assert forged.status_code == 403, "a post from another origin is refused"
        assert (await http.get(f"/tasks/{unique('nope')}")).status_code == 404

        await own_nats.stop()
        page = await http.get("/")
        assert page.status_code == 200
        assert "Broker unreachable" in page.text
        assert task.task_id in page.text, "the journal's view is still shown"
        timeline = await http.get(f"/tasks/{task.task_id}")
        assert timeline.status_code == 200
        await own_nats.start()

    async def reconnected() -> bool:
        return client.nc.is_connected

    await eventually(reconnected, what="the client to reconnect")
