"""The ``ballast`` console script.

``ballast run`` is what every replica of every agent and tool runs, for as long as
it lives. Through the whole CLI it would also load every other command's module and
Typer's model of all of them: about 1.5 MB more of each replica's memory (an idle
tool service on SQLite: 84.5 MB against 83.0 MB), for commands a replica never runs.
So ``run`` is dispatched to its own module before the CLI is loaded, and loads it
without the libraries a replica never uses (`services.cli.left_out`); every other
command, and ``ballast --help``, go through `services.cli.app`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from services.cli.left_out import leaving_out


def run_command() -> Callable[[list[str]], None]:
    """``ballast run`` (`services.cli.run.run_alone`), imported as a replica imports it."""
    with leaving_out():
        from services.cli.run import run_alone
    return run_alone


def main() -> None:
    """Entry point of the ``ballast`` console script (and of ``python -m services.cli``)."""
    if sys.argv[1:2] == ["run"]:
        run_command()(sys.argv[2:])
    else:
        from services.cli.app import app

        app()
