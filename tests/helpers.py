"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from contracts.principal import Principal
from contracts.subjects import Stream, tool_service
from services.identity import SigningKey
from services.settings import Settings

PRINCIPAL = Principal(user_id="tester", tenant="acme", scopes=("tickets:write",))

TEST_KEY = SigningKey.generate()
"""Signs the principals of the tests; every test service trusts it."""

TRUST_TEST_KEY = {
    "BALLAST_TRUSTED_KEYS": f'["{TEST_KEY.public_key}"]',
    "BALLAST_APPROVER_KEYS": f'["{TEST_KEY.public_key}"]',
}
"""Environment that makes a service process trust the test key."""


def unique(prefix: str) -> str:
    """A name no other test uses, valid as an agent or tool name."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def settings_for(nats_url: str, database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test: short acknowledgement wait so redeliveries happen fast."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "data_dir": data_dir,
        "ack_wait_s": 2.0,
        "relay_sweep_interval_s": 0.2,
        "signing_key": TEST_KEY.seed,
        "trusted_keys": [TEST_KEY.public_key],
        "approver_keys": [TEST_KEY.public_key],
        **overrides,
    }
    return Settings(**values)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def subject_count(js: JetStreamContext, stream: str, subject: str) -> int:
    """Messages stored in ``stream`` on ``subject`` (wildcards allowed)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def tool_calls_acknowledged(js: JetStreamContext, tool: str, count: int) -> bool:
    """Whether ``tool``'s consumer has delivered ``count`` stored calls or more and none
    awaits its acknowledgement (for `eventually`)."""
    info = await js.consumer_info(Stream.TOOLS.value, tool_service(tool))
    return bool(info.delivered.stream_seq >= count and info.num_ack_pending == 0)


def modules_a_service_loads(database_url: str) -> set[str]:
    """The modules of a fresh interpreter that imported what ``ballast run`` imports,
    checked and re-applied the schema of ``database_url`` and served its HTTP endpoint,
    as a starting service does."""
    probe = (
        "import asyncio, json, sys, urllib.request\n"
        "from services.cli.main import run_command\n"
        "run_command()\n"
        "from prometheus_client import CollectorRegistry\n"
        "from outbox import Database\n"
        "from outbox.schema import check_schema, upgrade\n"
        "from services.service_endpoint import ServiceEndpoint\n"
        "async def healthy():\n"
        "    return {'probe': 'ok'}\n"
        "async def main():\n"
        f"    db = Database({database_url!r})\n"
        "    await check_schema(db)\n"
        "    await upgrade(db)\n"
        "    await db.dispose()\n"
        "    http = ServiceEndpoint(CollectorRegistry(), healthy, host='127.0.0.1', port=0)\n"
        "    await http.start()\n"
        "    for path in ('/health', '/metrics'):\n"
        "        get = urllib.request.urlopen\n"
        "        await asyncio.to_thread(lambda: get(http.url + path, timeout=10).read())\n"
        "    await http.stop()\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))
