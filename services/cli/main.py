"""The ``ballast`` console script.

``ballast run`` is what every replica of every agent and tool runs, for as long as
it lives. Through the whole CLI it would also load every other command's module and
Typer's model of all of them: about 1.5 MB more of each replica's memory (an idle
tool service on SQLite: 84.5 MB against 83.0 MB), for commands a replica never runs.
So ``run`` is dispatched to its own module before the CLI is loaded; every other
command, and ``ballast --help``, go through `services.cli.app`.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``ballast`` console script (and of ``python -m services.cli``)."""
    if sys.argv[1:2] == ["run"]:
        from services.cli.run import run_alone

        run_alone(sys.argv[2:])
    else:
        from services.cli.app import app

        app()
