"""docker-compose.yml checked as far as a machine without a container engine can.

Its services, the commands they run (which must exist in the ``ballast`` CLI and
load real services), the environment they set (which the settings class must
know), health checks, and the NATS cluster configuration it mounts. The
cluster configuration itself is run by real nats-server processes in the
cluster test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
import yaml

from services.cli.app import app as cli
from services.loader import load_services
from services.service_file import configured
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
EXAMPLES = ("agent-triage", "agent-research", "tool-lookup", "tool-create_ticket")


def _ballast_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == "ballast:latest"}


def test_the_stack_has_a_three_node_cluster_postgres_every_example_service_and_the_dashboard() -> (
    None
):
    assert {"nats-1", "nats-2", "nats-3", "postgres", "migrate", "dashboard", *EXAMPLES} <= set(
        SERVICES
    )
    for name, service in _ballast_services().items():
        assert service["build"] == ".", f"{name} uses the one image built here"


def test_every_command_exists_and_every_target_loads_its_service() -> None:
    commands = {c.name for c in cli.registered_commands} | {g.name for g in cli.registered_groups}
    for name, service in _ballast_services().items():
        command = service["command"]
        assert command[0] in commands, f"{name}: 'ballast {command[0]}' is not a command"
        if command[0] == "run":
            _, specs = load_services(command[1])
            assert [s.service for s in specs] == [name], f"{name} runs {command[1]}"
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"]
    group = next(g for g in cli.registered_groups if g.name == "db")
    assert isinstance(group.typer_instance, typer.Typer)
    assert "upgrade" in {c.name for c in group.typer_instance.registered_commands}


def test_every_environment_variable_is_a_setting_and_the_cluster_gets_three_replicas() -> None:
    known = {f"BALLAST_{field.upper()}" for field in Settings.model_fields}
    for name, service in _ballast_services().items():
        env = service.get("environment", {})
        unknown = {k for k in env if k.startswith("BALLAST_")} - known
        assert not unknown, f"{name} sets {unknown}, which Settings does not know"
        if name != "migrate":
            assert env["BALLAST_STREAM_REPLICAS"] == "3"
            assert env["BALLAST_NATS_URL"].count("nats://") == 3
            assert "postgresql+asyncpg://" in env["BALLAST_DATABASE_URL"]
            Settings(**{k.removeprefix("BALLAST_").lower(): v for k, v in env.items()})


def test_services_wait_for_migrations_and_healthy_dependencies_and_have_health_checks() -> None:
    for name in (*EXAMPLES, "dashboard"):
        service = SERVICES[name]
        needs = service["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        for node in ("nats-1", "nats-2", "nats-3"):
            assert needs[node]["condition"] == "service_healthy"
        assert "healthcheck" in service, f"{name} has no health check"
        assert service["stop_grace_period"] == "30s"
    for name in ("nats-1", "nats-2", "nats-3", "postgres"):
        assert "healthcheck" in SERVICES[name]
    for name in EXAMPLES:
        files = [f["path"] for f in SERVICES[name]["env_file"]]
        assert f"deploy/nats-config/credentials/{name}.env" in files, "its own NATS user"


def test_each_nats_node_routes_to_the_two_others_and_includes_the_generated_users() -> None:
    for n in (1, 2, 3):
        conf = (ROOT / "deploy" / "nats" / f"nats-{n}.conf").read_text(encoding="utf-8")
        assert f"server_name: nats-{n}" in conf
        routes = set(re.findall(r'"nats://(nats-\d):6222"', conf))
        assert routes == {f"nats-{m}" for m in (1, 2, 3) if m != n}
        assert 'include "auth/nats.conf"' in conf
        assert SERVICES[f"nats-{n}"]["command"] == ["-c", f"/etc/nats/nats-{n}.conf"]


def test_every_service_file_is_mounted_and_valid_for_its_service() -> None:
    checked = 0
    for name, service in _ballast_services().items():
        inside = service.get("environment", {}).get("BALLAST_SERVICE_FILE")
        if inside is None:
            continue
        mounts = dict(reversed(v.split(":")[:2]) for v in service.get("volumes", []))
        assert inside in mounts, f"{name}: {inside} is not mounted"
        _, specs = load_services(service["command"][1])
        configured(specs[0], ROOT / mounts[inside])  # raises on a key that does not apply
        checked += 1
    assert checked, "the compose file shows a service file"
