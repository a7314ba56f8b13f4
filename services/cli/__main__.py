"""``python -m services.cli`` is the ``ballast`` command."""

from services.cli.main import main

main()
