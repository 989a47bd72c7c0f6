"""OAuth tokens encrypted at rest: AES-256-GCM with a key id, so keys can be rotated.

Keys come from the settings (``ground.settings.TokenKeySettings``), never from the database:

* ``METRICX_TOKEN_KEYS`` - ``kid:base64key[,kid:base64key...]`` (32-byte keys, standard or
  URL-safe base64); old keys stay listed until :func:`store.reencrypt_all` has moved every
  row to the active key.
* ``METRICX_TOKEN_KEY_ID`` - the active key id (new encryptions use it).

The associated data binds a ciphertext to its row (workspace, provider, account): a
ciphertext copied onto another connection fails to decrypt instead of silently lending
one merchant's token to another.  Error messages name key ids, never key or token bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ground.settings import TokenKeySettings

KEYS_ENV = "METRICX_TOKEN_KEYS"
ACTIVE_ENV = "METRICX_TOKEN_KEY_ID"
NONCE_BYTES = 12
_KID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class TokenKeyError(RuntimeError):
    """Misconfigured keys, or a ciphertext that cannot be opened with them."""





def aad_for(workspace_id: str, provider: str, account_id: str) -> bytes:
    return f"metricx.token.v1|{workspace_id}|{provider}|{account_id}".encode()


def generate_key() -> str:
    """A new random 256-bit key, base64 (for ``METRICX_TOKEN_KEYS``)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


@dataclass(frozen=True)
class Keyring:
    keys: Mapping[str, bytes] = field(repr=False)
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise TokenKeyError(f"{ACTIVE_ENV}={self.active!r} is not one of the key ids in {KEYS_ENV}")

    @classmethod
    def parse(cls, spec: str, active: str | None) -> Keyring:
        keys: dict[str, bytes] = {}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            kid, sep, b64 = part.partition(":")
            if not sep or not _KID.match(kid):
                raise TokenKeyError(f"{KEYS_ENV}: expected kid:base64key entries (bad key id {kid!r})")
            try:
                raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_" if ("-" in b64 or "_" in b64) else None, validate=True)
            except (binascii.Error, ValueError):
                raise TokenKeyError(f"{KEYS_ENV}: key {kid!r} is not valid base64") from None
            if len(raw) != 32:
                raise TokenKeyError(f"{KEYS_ENV}: key {kid!r} must be 32 bytes (AES-256), got {len(raw)}")
            if kid in keys:
                raise TokenKeyError(f"{KEYS_ENV}: key id {kid!r} listed twice")
            keys[kid] = raw
        if not keys:
            raise TokenKeyError(f"{KEYS_ENV} is empty: set it to kid:base64key (see README)")
        if active is None:
            if len(keys) != 1:
                raise TokenKeyError(f"{ACTIVE_ENV} must name the active key when {KEYS_ENV} lists several")
            active = next(iter(keys))
        return cls(keys, active)

    @classmethod
    def from_settings(cls, tokens: TokenKeySettings) -> Keyring:
        return cls.parse(tokens.keys.get_secret_value(), tokens.key_id or None)

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        """(key id, nonce || ciphertext+tag) under the active key; a fresh random nonce
        every time (96 bits: safe for far more tokens than we will ever store)."""
        nonce = os.urandom(NONCE_BYTES)
        return self.active, nonce + AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, aad)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise TokenKeyError(f"token encrypted with key id {key_id!r}, which is not in {KEYS_ENV}")
        if len(blob) <= NONCE_BYTES:
            raise TokenKeyError("token ciphertext is truncated")
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], bytes(blob[NONCE_BYTES:]), aad)
        except InvalidTag:
            raise TokenKeyError(f"token ciphertext does not authenticate under key id {key_id!r}") from None
