"""The ``ballast`` command, run as a real process against a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
import typer
from nats.js import JetStreamContext
from pydantic import BaseModel

from bulkheads import RetryPolicy
from contracts import ToolResult, ToolStatus
from contracts.subjects import Stream, result_subject, tool_service
from services.app import Ballast
from services.cli.common import fail
from services.client import BallastClient
from services.dead_letters import dead_letter_counts
from services.embedded import EmbeddedNats
from services.errors import HandlerError
from services.examples.support import LookupResult
from services.tools import ToolContext
from tests.helpers import TRUST_TEST_KEY, eventually, subject_count, unique
from tests.services.callers import caller_call, publish_call
from tests.services.conftest import Hosts

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALLAST_")}
    return {**env, "BALLAST_LOG_FORMAT": "json", "COLUMNS": "200", **TRUST_TEST_KEY, **values}


def ballast(
    *args: str, env: dict[str, str], timeout_s: float = 60, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip


async def aballast(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(ballast, *args, env=env)


class TestUpAndPublish:
    async def test_up_serves_publish_wait_and_stops_cleanly_on_sigterm(
        self, tmp_path: Path
    ) -> None:
        """'ballast up' starts an embedded broker and the demo services; 'ballast publish --wait'
        in another process finds it and prints the result; SIGTERM stops it with exit code 0."""
        env = cli_env(BALLAST_DATA_DIR=str(tmp_path))
        log_path = tmp_path / "up.log"
        with log_path.open("w") as log:
            up = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "up", cwd=ROOT, env=env,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            url_file = tmp_path / "nats.url"

            await eventually(lambda: _exists(url_file), timeout_s=20, what="ballast up to start")
            task_input = json.dumps({"customer": "acme", "message": "login page is down"})
            published = await aballast(
                "publish",
                "triage",
                task_input,
                "--scope",
                "tickets:write",
                "--wait",
                "--timeout",
                "30",
                env=env,
            )
            assert published.returncode == 0, published.stderr
            result = json.loads(published.stdout[published.stdout.index("{") :])
            assert result["status"] == "completed"
            assert result["output"]["priority"] == "high"

            status = await aballast("status", env=env)
            assert status.returncode == 0, status.stderr
            for name in ("BALLAST_TASKS", "agent-triage", "tool-create_ticket", "0 unsent"):
                assert name in status.stdout
        finally:
            up.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(up.wait(), 20)
        assert code == 0, log_path.read_text()
        assert not url_file.exists()

    async def test_run_serves_one_tool_until_sigterm(
        self, nats_server: EmbeddedNats, tmp_path: Path
    ) -> None:
        """'ballast run module:tool' serves that one tool against the configured broker, with
        the limits of its service file."""
        limits = tmp_path / "lookup.toml"
        limits.write_text("[pool]\nsize = 3\nmax_replicas = 2\n[retry]\nmax_deliveries = 4\n")
        env = cli_env(
            BALLAST_NATS_URL=nats_server.url,
            BALLAST_DATA_DIR=str(tmp_path),
            BALLAST_SERVICE_FILE=str(limits),
        )
        log_path = tmp_path / "run.log"
        with log_path.open("w") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "run", "services.examples.support:lookup",
                cwd=ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            async with BallastClient(nats_server.url) as client:
                await eventually(
                    lambda: _consumer_exists(client.js, "tool-lookup"),
                    timeout_s=20,
                    what="the service to declare its consumer",
                )
                info = await client.js.consumer_info(Stream.TOOLS.value, "tool-lookup")
                assert info.config.max_ack_pending == (3 + 1) * 2
                assert info.config.max_deliver == RetryPolicy(max_deliveries=4).server_max_deliver
                call = caller_call("lookup", call_id=f"{unique('run')}:1")
                call = call.model_copy(update={"args": {"query": "checkout 502"}})
                await publish_call(client.js, call)
                results = result_subject(call.agent, call.task_id)
                await eventually(
                    lambda: _results(client.js, results, 1), timeout_s=20, what="the result"
                )
                raw = await client.js.get_last_msg(Stream.RESULTS.value, results)
                assert raw.data is not None
                answer = ToolResult.model_validate_json(raw.data)
            assert answer.status is ToolStatus.OK
            assert LookupResult.model_validate(answer.output).articles[0].id == "kb-101"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 20)
        assert code == 0, log_path.read_text()

    def test_bad_targets_are_usage_errors(self, tmp_path: Path) -> None:
        env = cli_env(BALLAST_DATA_DIR=str(tmp_path))
        for target, message in (
            ("nosuchmodule:app", "cannot import"),
            ("services.examples.support:nothing", "expected a Ballast app"),
            ("no-colon", "MODULE:OBJECT"),
        ):
            done = ballast("run", target, env=env)
            assert done.returncode == 2
            assert message in done.stderr

    def test_run_loads_no_other_command_and_keeps_its_help(self, tmp_path: Path) -> None:
        """Every replica runs ``ballast run``: it loads its own command only (and the
        agent runtime only to serve an agent), and answers help and usage errors exactly
        as the whole CLI's ``run`` (``ballast --help`` lists it)."""
        probe = (
            "import json, sys\n"
            "from services.cli.main import main\n"
            "sys.argv = ['ballast', 'run', 'nosuchmodule:app']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    print(json.dumps([exc.code, sorted(sys.modules)]))\n"
        )
        env = cli_env(BALLAST_DATA_DIR=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
        assert code == 2
        assert "cannot import" in done.stderr
        assert "services.cli.run" in loaded
        others = {"services.cli.app", "services.cli.dlq", "services.cli.observe"}
        others |= {"services.agent_context", "services.agents"}
        assert not others & set(loaded)
        through_the_cli = (
            "import sys\nfrom services.cli.app import app\napp(sys.argv[1:], prog_name='ballast')\n"
        )
        for args in (["--help"], ["a", "b"], ["--service-files", "x", "a:b"]):
            alone = ballast("run", *args, env=env)
            whole = subprocess.run(
                [sys.executable, "-c", through_the_cli, "run", *args], cwd=ROOT, env=env,
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert (alone.returncode, alone.stdout, alone.stderr) == (
                whole.returncode,
                whole.stdout,
                whole.stderr,
            )
        assert "Usage: ballast run [OPTIONS] {target}" in alone.stderr
        listed = ballast("--help", env=env)
        assert "Run one service as deployed" in listed.stdout

    def test_bad_service_files_are_usage_errors(self, tmp_path: Path) -> None:
        env = cli_env(BALLAST_DATA_DIR=str(tmp_path))
        limits = tmp_path / "limits.toml"
        for target, text, message in (
            ("services.examples.support:lookup", "[pool]\nsise = 3\n", "unknown key sise"),
            ("services.examples.support:lookup", "tools = []\n", "tools cannot be set"),
            ("services.examples.support:lookup", "[pool\n", "not valid TOML"),
            ("services.examples.support:app", "[pool]\nsize = 3\n", "configures one service"),
        ):
            limits.write_text(text)
            done = ballast("run", target, "--service-file", str(limits), env=env)
            assert done.returncode == 2, done.stderr
            assert message in " ".join(done.stderr.split()), done.stderr

    def test_publish_refuses_input_that_is_not_a_json_object(self, tmp_path: Path) -> None:
        env = cli_env(BALLAST_DATA_DIR=str(tmp_path))
        for bad in ("{not json", "[1, 2]"):
            done = ballast("publish", "triage", bad, env=env)
            assert done.returncode == 2
            assert "JSON" in done.stderr

    def test_commands_without_a_broker_say_how_to_get_one(self, tmp_path: Path) -> None:
        done = ballast("dlq", "ls", env=cli_env(BALLAST_DATA_DIR=str(tmp_path)))
        assert done.returncode == 2
        assert "ballast up" in done.stderr


async def _consumer_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.consumer_info(Stream.TOOLS.value, name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


class Payload(BaseModel):
    text: str


class TestDeadLetterCommands:
    async def test_ls_show_redrive_and_purge(
        self, hosts: Hosts, nats_server: EmbeddedNats, tmp_path: Path
    ) -> None:
        """Two calls dead-lettered while a tool is broken: listed, shown, redriven after the fix
        (both then answered ok); two more purged."""
        app = Ballast("t")
        broken = True
        name = unique("cli_tool")
        service = tool_service(name)

        @app.tool(name, retry=RetryPolicy(max_deliveries=1))
        async def cli_tool(ctx: ToolContext, args: Payload) -> str:
            if broken:
                raise HandlerError("dependency missing", retryable=False)
            return args.text.upper()

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        env = cli_env(BALLAST_NATS_URL=nats_server.url, BALLAST_DATA_DIR=str(tmp_path))
        task = unique("c")
        for i in (1, 2):
            await publish_call(client.js, caller_call(name, call_id=f"{task}:{i}"))
        await eventually(lambda: _dead(client.js, service, 2), what="two dead letters")

        listed = await aballast("dlq", "ls", env=env)
        assert listed.returncode == 0, listed.stderr
        assert service in listed.stdout
        detail = await aballast("dlq", "ls", service, env=env)
        seqs = [
            int(line.split()[1]) for line in detail.stdout.splitlines() if "ballast.tool." in line
        ]
        assert len(seqs) == 2, detail.stdout
        shown = await aballast("dlq", "show", str(seqs[0]), env=env)
        assert json.loads(shown.stdout)["error"]["message"] == "dependency missing"

        broken = False
        redriven = await aballast("dlq", "redrive", service, env=env)
        assert redriven.returncode == 0, redriven.stderr
        assert "redrove 2" in redriven.stdout
        results = result_subject("caller", task)
        # Each call was answered twice: the error when it died, then ok after the redrive.
        await eventually(
            lambda: _results(client.js, results, 4), what="answers to the redriven calls"
        )
        assert service not in await dead_letter_counts(client.js)

        broken = True
        for i in (3, 4):
            await publish_call(client.js, caller_call(name, call_id=f"{task}:{i}"))
        await eventually(lambda: _dead(client.js, service, 2), what="two more dead letters")
        purged = await aballast("dlq", "purge", service, "--yes", env=env)
        assert "purged 2" in purged.stdout
        assert service not in await dead_letter_counts(client.js)


async def _dead(js: JetStreamContext, service: str, n: int) -> bool:
    return (await dead_letter_counts(js)).get(service, 0) == n


async def _results(js: JetStreamContext, subject: str, n: int) -> bool:
    return await subject_count(js, Stream.RESULTS.value, subject) == n


class TestObservabilityCommands:
    async def test_demo_then_tasks_trace_costs_and_replay_read_its_journal(
        self, tmp_path: Path
    ) -> None:
        """'ballast demo' in an empty directory leaves its journal in .ballast/ there; the
        observability commands, run from the same directory, find and explain its two tasks."""
        env = cli_env()  # no BALLAST_DATA_DIR: the default, .ballast/ in the working directory

        async def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(ballast, *args, env=env, cwd=tmp_path)

        def parsed(done: subprocess.CompletedProcess[str]) -> Any:
            assert done.returncode == 0, done.stdout + done.stderr
            return json.loads(done.stdout)

        demo = await cli("demo")
        assert demo.returncode == 0, demo.stderr
        assert (tmp_path / ".ballast" / "ballast.db").is_file()

        # Each command is a process of its own (about a second to start): run them together.
        listing, unknown = await asyncio.gather(
            cli("tasks", "ls", "--json"), cli("replay", "0" * 32)
        )
        listed = parsed(listing)
        assert sorted((t["agent"], t["status"]) for t in listed) == [
            ("research", "completed"),
            ("triage", "completed"),
        ]
        ids = {t["agent"]: t["task_id"] for t in listed}
        assert unknown.returncode != 0
        assert f"no journal for task {'0' * 32}" in unknown.stderr
        assert "matches" not in unknown.stdout

        triage = ids["triage"]
        filtered, traced, shown, spending, replayed = await asyncio.gather(
            cli("tasks", "ls", "--agent", "triage", "--json"),
            cli("trace", triage, "--json"),
            cli("trace", triage),
            cli("costs", "--by", "agent", "--json"),
            cli("replay", triage),
        )
        assert [t["task_id"] for t in parsed(filtered)] == [triage]

        found = parsed(traced)
        assert (found["agent"], found["status"], found["user_id"]) == (
            "triage",
            "completed",
            "demo-user",
        )
        assert [(st["kind"], st["name"]) for st in found["steps"]] == [
            ("llm", "scripted-triage"),
            ("delegate", "research"),
            ("tool", "create_ticket"),
        ]
        llm, delegation, ticket = found["steps"]
        assert llm["input_tokens"] > 0
        assert Decimal(llm["cost_usd"]) > 0
        assert found["input_tokens"] > 0
        assert Decimal(found["cost_usd"]) > 0
        assert delegation["child"]["task_id"] == ids["research"]
        assert delegation["child"]["status"] == "completed"
        assert [st["name"] for st in delegation["child"]["steps"]] == [
            "lookup",
            "scripted-research",
        ]
        assert ticket["status"] == "completed"
        assert [d["verdict"] for d in ticket["decisions"]] == ["allowed"]
        assert str(ticket["outcome"]["ticket_id"]).startswith("T-")

        assert shown.returncode == 0, shown.stderr
        for name in ("scripted-triage", "research", "lookup", "create_ticket", ids["research"]):
            assert name in shown.stdout

        spent = {line["key"]: line for line in parsed(spending)}
        assert set(spent) == {"triage", "research"}
        for line in spent.values():
            assert line["calls"] == 1
            assert line["input_tokens"] > 0
            assert line["output_tokens"] > 0
            assert Decimal(line["cost_usd"]) > 0
        assert spent["triage"]["input_tokens"] == llm["input_tokens"]

        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "matches its journal" in replayed.stdout
        assert "3/3 steps matched" in replayed.stdout
        assert "ended completed" in replayed.stdout


def test_an_error_is_printed_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets in a message are text (rich read them as its markup and dropped them)."""
    with pytest.raises(typer.Exit) as exited:
        fail("pool [size] must be 1-64 (input_value=[0])", code=2)
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err == "error: pool [size] must be 1-64 (input_value=[0])\n"
