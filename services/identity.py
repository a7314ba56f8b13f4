"""Signed principals and approval grants: Ed25519 with NATS nkeys.

Keys are NATS nkeys (a seed ``SU...`` to sign, a public key ``U...`` to verify),
so they can be made and used with the usual NATS tools in any language.

The ``ballast-principal`` header carries a token
``<base64url(principal JSON)>.<base64url(signature)>.<signer public key>``: the
signature covers the exact JSON bytes of the first part. A verifier accepts it
only when the signer is one of its trusted keys, the signature is valid, the
principal has not expired, and it equals the principal in the message body.
No canonical form is needed: whatever JSON bytes were signed are what is checked.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

from contracts.approval import ApprovalGrant
from contracts.principal import Principal
from contracts.wire import utc_now
from services.errors import AuthenticationError, ConfigurationError

VERIFIED_TOKENS = 256
"""Principal tokens whose signature check is remembered: the most recently used, enough
for the tasks a service has in flight."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SigningKey:
    """A private signing key (an nkey seed)."""

    def __init__(self, seed: str) -> None:
        try:
            self._pair = nkeys.from_seed(seed.strip().encode())
        except (nkeys.NkeysError, ValueError, binascii.Error) as exc:
            raise ConfigurationError(
                "the signing key is not a valid nkey seed (it starts with 'SU'); "
                "make one with 'ballast keys new'"
            ) from exc
        self.seed = seed.strip()
        self.public_key: str = self._pair.public_key.decode()

    @classmethod
    def generate(cls) -> SigningKey:
        raw = bytes(nacl.signing.SigningKey.generate())
        return cls(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER).decode())

    def sign(self, data: bytes) -> bytes:
        signature: bytes = self._pair.sign(data)
        return signature


def _verify_key(public_key: str) -> nacl.signing.VerifyKey:
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError) as exc:
        raise AuthenticationError(f"signer {public_key[:12]}... is not an nkey") from exc
    body, checksum = raw[:-2], int.from_bytes(raw[-2:], "little")
    if len(body) != 33 or body[0] != nkeys.PREFIX_BYTE_USER or nkeys.crc16(body) != checksum:
        raise AuthenticationError(f"signer {public_key[:12]}... is not a user nkey")
    return nacl.signing.VerifyKey(bytes(body[1:]))


class KeyRing:
    """The public keys whose signatures this service accepts."""

    def __init__(self, public_keys: Iterable[str]) -> None:
        self.public_keys = frozenset(k.strip() for k in public_keys if k.strip())
        self._verifiers: dict[str, nacl.signing.VerifyKey] = {}
        """Decoded trusted keys: decoding costs about as much as checking a signature."""

    def check(self, signer: str, data: bytes, signature: bytes) -> None:
        """Raise `AuthenticationError` unless ``signer`` is trusted and signed ``data``."""
        if signer not in self.public_keys:
            raise AuthenticationError(f"signer {signer[:12]}... is not a trusted key")
        verifier = self._verifiers.get(signer)
        if verifier is None:
            verifier = self._verifiers[signer] = _verify_key(signer)
        try:
            verifier.verify(data, signature)
        except nacl.exceptions.BadSignatureError as exc:
            raise AuthenticationError("the signature does not match the signed content") from exc


def sign_principal(principal: Principal, key: SigningKey) -> str:
    """The ``ballast-principal`` header value for ``principal``."""
    payload = principal.model_dump_json().encode()
    return f"{_b64(payload)}.{_b64(key.sign(payload))}.{key.public_key}"


def verify_principal(
    token: str | None, claimed: Principal, keys: KeyRing, *, now: datetime | None = None
) -> Principal:
    """The principal of a valid token that matches ``claimed``; else `AuthenticationError`."""
    if not token:
        raise AuthenticationError("the message carries no signed principal (ballast-principal)")
    principal, expires_at = _signed_principal(token, keys)
    if expires_at <= (now or utc_now()):
        raise AuthenticationError(f"the principal expired at {expires_at.isoformat()}")
    if principal != claimed:
        raise AuthenticationError("the principal in the message differs from the signed one")
    return principal


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _signed_principal(token: str, keys: KeyRing) -> tuple[Principal, datetime]:
    """The principal ``token`` carries and its expiry, if one of ``keys`` signed it.

    A task's token comes with every message of the task, and checking its signature costs
    about 40 us; the verdict of a token that passed is kept (the token is the exact signed
    bytes, and a key ring never changes), and its expiry is checked at every use. A token
    that fails is checked again each time: failures are not kept.
    """
    try:
        payload_b64, signature_b64, signer = token.split(".")
        payload, signature = _unb64(payload_b64), _unb64(signature_b64)
    except (ValueError, binascii.Error) as exc:
        raise AuthenticationError("the ballast-principal header is not a principal token") from exc
    keys.check(signer, payload, signature)
    try:
        principal = Principal.model_validate_json(payload)
    except ValueError as exc:
        raise AuthenticationError("the signed principal is not a valid Principal") from exc
    if principal.expires_at is None:
        raise AuthenticationError("the signed principal has no expiry; sign it with expires_at")
    return principal, principal.expires_at


def args_digest(args: dict[str, Any]) -> str:
    """SHA-256 of the arguments' canonical JSON: what an approval is bound to."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _grant_bytes(grant: ApprovalGrant) -> bytes:
    return grant.model_dump_json(exclude={"signature"}).encode()


def sign_grant(
    approval_id: str,
    tool: str,
    args: dict[str, Any],
    *,
    approver: str,
    expires_at: datetime,
    key: SigningKey,
) -> ApprovalGrant:
    """A signed approval of exactly this call."""
    unsigned = ApprovalGrant(
        approval_id=approval_id,
        tool=tool,
        args_digest=args_digest(args),
        approver=approver,
        expires_at=expires_at,
        signer=key.public_key,
        signature="",
    )
    return unsigned.model_copy(update={"signature": _b64(key.sign(_grant_bytes(unsigned)))})


def verify_grant(
    grant: ApprovalGrant, call_tool: str, call_args: dict[str, Any], keys: KeyRing
) -> None:
    """Raise `AuthenticationError` unless ``grant`` approves exactly this call, now."""
    keys.check(grant.signer, _grant_bytes(grant), _unb64(grant.signature))
    if grant.tool != call_tool or grant.args_digest != args_digest(call_args):
        raise AuthenticationError("the approval was given for another call")
    if grant.expires_at <= utc_now():
        raise AuthenticationError("the approval has expired")


DEV_KEY_FILE = "keys/dev.seed"


def development_key(data_dir: Path) -> SigningKey:
    """The local development key (made on first use, readable by this user only)."""
    path = data_dir / DEV_KEY_FILE
    if path.is_file():
        return SigningKey(path.read_text())
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.seed + "\n")
    return key
