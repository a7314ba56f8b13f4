"""Admission of an input: processed before (its stored result answers), or claimed, or busy.

A worker may run an input only when the inbox has no entry for it and the
worker holds its claim (`outbox.claims`). Both are decided for many inputs in
two statements (a third drops claims taken for inputs found processed), so
that the deliveries arriving together are admitted in one shared transaction
(`outbox.group_commit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ClaimStatements(Protocol):
    """The statements admission runs, in the open transaction of a shared write or, on
    PostgreSQL, in none (each commits on its own). See `outbox.staged_writes.Statements`."""

    def claim(self, requests: Sequence[ClaimRequest], now: datetime) -> dict[tuple[str, str], str]:
        """Claim each input unless another owner's claim is live at ``now``; return the owner
        of each claim written, by (consumer, key). At most one request per input."""

    def processed(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes | None]:
        """The stored result of each of these (consumer, key) inputs that the inbox holds."""

    def end_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        """End every claim on these (consumer, key) inputs."""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A worker (``owner``) asks to run ``key`` at ``consumer`` until ``expires_at``."""

    consumer: str
    key: str
    owner: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a `ClaimRequest`."""

    processed: bool
    """The input was processed before: answer with ``result``, run nothing."""
    result: bytes | None
    claimed: bool
    """The worker holds the claim and may run the input."""


def admit_all(
    statements: ClaimStatements, requests: Sequence[ClaimRequest], now: datetime
) -> list[Admission]:
    """Admit ``requests`` in the open transaction ``statements`` run in.

    A live claim of another owner wins; a lapsed one is taken over. Two requests
    for the same input in one call: the first may claim it, the second is busy.

    The claims are written before the inbox is read. Under PostgreSQL's read committed,
    a worker that finishes the input between the two statements (its inbox entry in,
    its claim gone) is then seen by the read, and the input is answered from the inbox;
    read first, its commit could free the claim just before the upsert, and the input
    would run a second time. A claim taken for an input found processed is dropped.
    """
    wanted: dict[tuple[str, str], ClaimRequest] = {}
    for request in requests:
        wanted.setdefault((request.consumer, request.key), request)
    holders = statements.claim(list(wanted.values()), now)
    done = statements.processed(list(wanted))
    stray = [k for k in done if holders.get(k) == wanted[k].owner]
    if stray:
        statements.end_claims(stray)
    return [
        Admission(
            processed=(r.consumer, r.key) in done,
            result=done.get((r.consumer, r.key)),
            claimed=(r.consumer, r.key) not in done and holders.get((r.consumer, r.key)) == r.owner,
        )
        for r in requests
    ]
