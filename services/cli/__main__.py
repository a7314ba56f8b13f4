"""``python -m services.cli`` is the ``ballast`` command."""

from services.cli.app import main

main()
