"""``ballast keys``: signing keys for principals and approvals."""

from __future__ import annotations

import typer

from services.cli.console import console
from services.identity import SigningKey

app = typer.Typer(help="Signing keys (Ed25519 NATS nkeys) for principals and approvals.")


@app.command("new")
def new() -> None:
    """Make a key pair: the seed signs (keep it secret), the public key goes to the verifiers."""
    key = SigningKey.generate()
    console.print(f"seed (BALLAST_SIGNING_KEY, keep secret): {key.seed}")
    console.print(
        f"public key (add to BALLAST_TRUSTED_KEYS / BALLAST_APPROVER_KEYS): {key.public_key}"
    )
