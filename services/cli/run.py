"""``ballast run``: one service as deployed.

Every replica of every agent and tool runs this command, so it is a module of its own
that imports only what serving needs: `services.cli.main` runs it without loading the
rest of the CLI (see there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import load_settings, reported, run, until_stopped
from services.errors import ConfigurationError
from services.host import ServiceHost, started_host
from services.loader import load_services
from services.service_file import configured
from services.stack import nats_url_for_tools


def run_service(
    target: Annotated[
        str, typer.Argument(help="MODULE:OBJECT: one agent or tool (or an app) to serve.")
    ],
    service_file: Annotated[
        Path | None,
        typer.Option(
            help="TOML limits of this one service (pool, retry, budget, allow-list); "
            "default: BALLAST_SERVICE_FILE."
        ),
    ] = None,
) -> None:
    """Run one service as deployed, on BALLAST_NATS_URL (or the local 'ballast up')."""
    settings = load_settings()
    with reported():
        name, specs = load_services(target)
        limits = service_file or settings.service_file
        if limits is not None:
            if len(specs) != 1:
                raise ConfigurationError(
                    f"a service file configures one service, and {target} has {len(specs)}; "
                    "run each agent or tool on its own (MODULE:OBJECT of one of them)"
                )
            specs = [configured(specs[0], limits)]

    async def main() -> None:
        stack = settings.model_copy(update={"nats_url": nats_url_for_tools(settings)})
        host = await started_host(lambda: ServiceHost(stack, specs, name=name))
        try:
            await until_stopped()
        finally:
            await host.stop()

    run(main())


def run_alone(args: list[str]) -> None:
    """``ballast run ARGS`` through a Typer app of this one command: the same options,
    help and errors as through the whole CLI, where `services.cli.app` registers
    `run_service` too."""
    alone = typer.Typer(add_completion=False)
    alone.command()(run_service)
    alone(args=args, prog_name="ballast run")
