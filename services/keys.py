"""Which keys a process signs with and trusts, from its settings.

Production needs its keys configured (``BALLAST_TRUSTED_KEYS``, and
``BALLAST_SIGNING_KEY`` where it admits tasks or approves calls) and refuses to
start without them. Development uses a local key made on first use under the
data directory, and trusts it for principals and approvals alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.errors import ConfigurationError
from services.identity import KeyRing, SigningKey, development_key
from services.settings import Settings


@dataclass(frozen=True, slots=True)
class Keys:
    signer: SigningKey | None
    """Signs principals and approval grants made by this process."""
    principals: KeyRing
    """Accepted signers of principals."""
    approvers: KeyRing
    """Accepted signers of approval grants."""

    def require_signer(self) -> SigningKey:
        if self.signer is None:
            raise ConfigurationError(
                "this command signs, but no BALLAST_SIGNING_KEY is configured; "
                "make one with 'ballast keys new'"
            )
        return self.signer


def resolve_keys(settings: Settings) -> Keys:
    """The keys of this process; refuses a production set-up without them."""
    signer = SigningKey(settings.signing_key.get_secret_value()) if settings.signing_key else None
    if settings.env == "production":
        if not settings.trusted_keys:
            raise ConfigurationError(
                "production refuses to start without BALLAST_TRUSTED_KEYS (a JSON list of the "
                "public keys that sign principals); see 'ballast keys new'"
            )
        return Keys(signer, KeyRing(settings.trusted_keys), KeyRing(settings.approver_keys))
    signer = signer or development_key(settings.data_dir)
    local = [signer.public_key]
    return Keys(
        signer,
        KeyRing([*settings.trusted_keys, *local]),
        KeyRing([*settings.approver_keys, *local]),
    )
