"""Authenticated encryption of secrets at rest (exchange keys, TOTP secrets).

AES-256-GCM with a key derived (HKDF-SHA256) from the platform secret key, one random 96-bit
nonce per message, and the *purpose* (for example ``exchange_account:7:api_secret``) bound as
associated data, so a ciphertext copied to another row or column fails to decrypt instead of
silently yielding another account's key.  Layout: ``b"v1" + nonce(12) + ciphertext+tag``.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptoorchestrator.platform.errors import ConfigError
from cryptoorchestrator.platform.logs import register_secret

_VERSION = b"v1"
_NONCE = 12


class SecretBox:
    """Encrypt and decrypt small secrets with a key derived from the platform secret key."""

    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < 16:
            raise ConfigError("secret_key must be at least 16 characters long")
        register_secret(secret_key)
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"cryptoorchestrator/secretbox",
            info=b"aes-256-gcm v1",
        ).derive(secret_key.encode("utf-8"))
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, purpose: str) -> bytes:
        """Return the ciphertext of ``plaintext``, bound to ``purpose``."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), purpose.encode("utf-8"))
        return _VERSION + nonce + sealed

    def decrypt(self, blob: bytes, purpose: str) -> str:
        """Return the plaintext; raise ConfigError if the key, purpose or data do not match.

        Decrypted values are registered with the log redactor, so they can never be logged.
        """
        if not blob.startswith(_VERSION) or len(blob) < len(_VERSION) + _NONCE + 16:
            raise ConfigError(f"cannot decrypt {purpose}: unknown format")
        nonce = blob[len(_VERSION) : len(_VERSION) + _NONCE]
        try:
            plain = self._aead.decrypt(
                nonce, blob[len(_VERSION) + _NONCE :], purpose.encode("utf-8")
            ).decode("utf-8")
        except InvalidTag as exc:
            raise ConfigError(
                f"cannot decrypt {purpose}: wrong secret key or tampered data"
            ) from exc
        register_secret(plain)
        return plain
