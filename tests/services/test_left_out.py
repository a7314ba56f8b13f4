"""What a replica leaves unloaded: ``ballast run`` loads Ballast without rich and uvicorn
(`services.cli.left_out`), the block making a name unimportable only while it lasts,
and a replica that logs to a terminal still prints an error's traceback; a host that
serves only tools does not load the agent runtime."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.left_out import leaving_out
from services.embedded import EmbeddedNats
from tests.helpers import TRUST_TEST_KEY

ROOT = Path(__file__).resolve().parents[2]


def test_a_name_fails_to_import_inside_the_block_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ballast_left_out_probe.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ballast_left_out_probe", raising=False)
    with pytest.raises(RuntimeError), leaving_out(("ballast_left_out_probe", "json")):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("ballast_left_out_probe")
        assert importlib.import_module("json").dumps([1]) == "[1]", "imported before: kept"
        raise RuntimeError("leaving the block by an error unblocks too")
    assert importlib.import_module("ballast_left_out_probe").VALUE == 7
    monkeypatch.delitem(sys.modules, "ballast_left_out_probe")


def test_a_replica_loads_no_rich_and_its_console_log_shows_the_traceback() -> None:
    probe = (
        "import json, sys\n"
        "from services.cli.main import run_command\n"
        "run_command()\n"
        "import structlog\n"
        "from services.logging import configure_logging\n"
        "configure_logging('console', 'info')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    structlog.get_logger().exception('handler failed')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "services.cli.run" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"rich", "pygments"}}
    assert "handler failed" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert 'File "<string>", line 8, in <module>' in done.stderr, "Python's own format"
    assert "ZeroDivisionError: division by zero" in done.stderr


async def test_a_host_of_tools_does_not_load_the_agent_runtime(
    nats_server: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    probe = (
        "import asyncio, json, sys\n"
        "from bench.noop_app import app\n"
        "from services.host import ServiceHost\n"
        "from services.settings import Settings\n"
        "async def main():\n"
        "    async with ServiceHost(Settings(), app.specs, name='noop') as host:\n"
        "        assert host.consumers\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")} | {
        "BALLAST_NATS_URL": nats_server.url,
        "BALLAST_DATABASE_URL": database_url,
        "BALLAST_DATA_DIR": str(tmp_path),
        **TRUST_TEST_KEY,
    }
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "services.tools" in loaded
    assert not {"services.agent_context", "services.agents"} & loaded
